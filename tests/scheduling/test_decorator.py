"""`@scheduled` declares a job with a validated schedule; mistakes stop start-up with one clear message."""

from datetime import timedelta

import pytest
from django.utils import timezone

from scheduling import scheduled
from scheduling.exceptions import InvalidJobDeclaration, InvalidSchedule
from scheduling.models import JobRun, RunOutcome
from scheduling.registry import registry as declared
from scheduling.schedules import CronSchedule, EverySeconds


def nightly() -> None:
    """A module-level function, as jobs are in real code."""


def minutely() -> None:
    pass


def test_cron_job_is_named_after_its_dotted_path_and_clustered_by_default(job_registry, settings):
    returned = scheduled(cron="0 0 1 * * ?")(nightly)

    job = job_registry.get(f"{__name__}.nightly")
    assert returned is nightly
    assert job.schedule == CronSchedule("0 0 1 * * ?", settings.TIME_ZONE)
    assert job.clustered is True
    assert job.transactional is False


def test_local_interval_job_with_its_own_name_in_a_transaction(job_registry):
    scheduled(every_seconds=60, clustered=False, name="cache.expire", transactional=True)(minutely)

    job = job_registry.get("cache.expire")
    assert (job.schedule, job.clustered, job.transactional, job.function) == (EverySeconds(60), False, True, minutely)


def test_cron_may_be_given_positionally_with_a_time_zone(job_registry):
    scheduled("30 2 * * *", timezone="Europe/Berlin")(nightly)

    assert job_registry.get(f"{__name__}.nightly").schedule == CronSchedule("30 2 * * *", "Europe/Berlin")


def test_declaring_the_same_function_twice_replaces_it(job_registry):
    scheduled(every_seconds=10)(nightly)
    scheduled(every_seconds=20)(nightly)

    assert [job.schedule for job in job_registry.all()] == [EverySeconds(20)]


def test_two_functions_may_not_share_a_name(job_registry):
    scheduled(every_seconds=10, name="shared")(nightly)

    with pytest.raises(InvalidJobDeclaration, match="two scheduled jobs are named 'shared'"):
        scheduled(every_seconds=10, name="shared")(minutely)


def test_invalid_schedule_is_refused_before_the_function_is_seen(job_registry):
    with pytest.raises(InvalidSchedule, match="the minute field '99' is not valid"):
        scheduled(cron="0 99 * * * ?")
    with pytest.raises(InvalidSchedule, match="exactly one of"):
        scheduled()


def test_job_functions_take_no_arguments(job_registry):
    def needs_input(batch_size):
        pass

    with pytest.raises(InvalidJobDeclaration, match="requires batch_size"):
        scheduled(every_seconds=5, name="x")(needs_input)


def test_nested_functions_need_a_name_other_processes_can_find(job_registry):
    def inner() -> None:
        pass

    with pytest.raises(InvalidJobDeclaration, match="defined inside another function"):
        scheduled(every_seconds=5)(inner)


def test_flags_must_be_booleans(job_registry):
    with pytest.raises(InvalidJobDeclaration, match="clustered must be True or False"):
        scheduled(every_seconds=5, clustered="no")


def test_the_scripts_prefix_is_kept_for_custom_scripts(job_registry):
    with pytest.raises(InvalidJobDeclaration, match="kept for custom scripts"):
        scheduled(every_seconds=5, name="scripts.mine")(nightly)


@pytest.mark.django_db
def test_the_run_history_is_pruned_by_a_clustered_hourly_job_declared_in_scheduling_periodic(settings):
    job = declared.get("scheduling.periodic.prune_job_runs")

    assert job is not None and job.clustered
    assert job.schedule.to_dict() == {"cron": "0 17 * * * ?", "timezone": settings.TIME_ZONE}
    old = timezone.now() - timedelta(days=settings.SCHEDULER_RUN_RETENTION_DAYS + 1)
    JobRun.objects.create(
        job_name="a.job", tick=old, node="n", process="p:1", started_at=old, outcome=RunOutcome.SUCCEEDED
    )
    an_hour_ago = timezone.now() - timedelta(hours=1)
    JobRun.objects.create(
        job_name="b.job",
        tick=an_hour_ago,
        node="n",
        process="p:1",
        started_at=an_hour_ago,
        heartbeat_at=an_hour_ago,
        outcome=RunOutcome.RUNNING,
    )  # its process died
    job.function()
    assert list(JobRun.objects.values_list("job_name", "outcome")) == [("b.job", RunOutcome.ABANDONED)]
