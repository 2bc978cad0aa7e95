from django.core.management.base import BaseCommand, CommandError

from batch import control


class Command(BaseCommand):
    help = (
        "Move unfinished jobs to another node's queue (maintenance does this by itself for nodes whose "
        "workers stopped beating): those of --from NODE, or the job --job ID, to --to NODE or to the least "
        "busy other node with live workers. Prints one line per job moved."
    )

    def add_arguments(self, parser):
        parser.add_argument("--from", dest="from_node", metavar="NODE", help="move the unfinished jobs of this node")
        parser.add_argument(
            "--to",
            dest="to_node",
            metavar="NODE",
            help="move them to this node (default: the least busy other node with live workers)",
        )
        parser.add_argument("--job", dest="job_id", metavar="ID", help="move this job only")
        parser.add_argument(
            "--force",
            action="store_true",
            help="move to --to even if no live worker of that node has been seen; maintenance leaves "
            "the jobs there until that node's workers have beaten",
        )

    def handle(self, *args, from_node: str | None, to_node: str | None, job_id: str | None, force: bool, **options):
        if from_node is None and job_id is None:
            raise CommandError("name the jobs to move: --from NODE or --job ID")
        try:
            moves = control.reassign_jobs(from_node=from_node, to_node=to_node, job_id=job_id, force=force)
        except control.BatchError as error:
            raise CommandError(str(error)) from None
        if not moves:
            self.stdout.write(
                f"no unfinished jobs on node {from_node}: nothing moved"
                if job_id is None
                else f"job {job_id} was moved or ended meanwhile: nothing moved"
            )
        for move in moves:
            self.stdout.write(
                f"{move.job_id} {move.from_node_id} -> {move.to_node_id} "
                f"({move.announced_chunks} waiting chunks announced)"
            )
