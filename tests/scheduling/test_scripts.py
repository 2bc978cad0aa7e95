"""Custom scripts: checked before anything is stored, audited, scheduled through PeriodicTask rows."""

import textwrap
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from django_celery_beat.models import PeriodicTask, PeriodicTasks

from scheduling import scripts
from scheduling.catalog import resolve_job
from scheduling.exceptions import CustomScriptsDisabled, InvalidScript, ScriptExists, ScriptNotFound
from scheduling.models import CustomScript, JobRun, ScriptAudit
from scheduling.runs import Occurrence, run_occurrence
from scheduling.schedules import CronSchedule, EverySeconds
from scheduling.sync import CLUSTERED_TASK, LOCAL_TASK

TWO_JOBS = textwrap.dedent("""\
    from scheduling import scheduled

    @scheduled(cron="0 0 1 * * ?")
    def nightly():
        return "nightly"

    @scheduled(every_seconds=30, clustered=False, name="refresh")
    def refresh_cache():
        pass
""")


def source_with(body: str) -> str:
    return "from scheduling import scheduled\n" + textwrap.dedent(body)


@pytest.fixture
def scripts_on(settings):
    settings.CUSTOM_SCRIPTS_ENABLED = True


@pytest.fixture
def admin_user(db):
    return get_user_model().objects.create_superuser("root", password="pw")


def test_a_script_declares_jobs_named_under_its_own_prefix(settings):
    jobs = {job.name: job for job in scripts.compile_script("reports", TWO_JOBS)}

    assert set(jobs) == {"scripts.reports.nightly", "scripts.reports.refresh"}
    assert jobs["scripts.reports.nightly"].schedule == CronSchedule("0 0 1 * * ?", settings.TIME_ZONE)
    assert jobs["scripts.reports.refresh"].schedule == EverySeconds(30)
    assert not jobs["scripts.reports.refresh"].clustered
    assert jobs["scripts.reports.nightly"].function() == "nightly"


@pytest.mark.parametrize(
    "source, line, reason",
    [
        (source_with("def broken(:\n    pass\n"), 2, "SyntaxError"),
        (source_with("\n\nx = undefined_name\n"), 4, "NameError: name 'undefined_name' is not defined"),
        (source_with("@scheduled(cron='0 0 25 * * ?')\ndef f():\n    pass\n"), 2, "the hour field '25' is not valid"),
        (source_with("@scheduled(every_seconds=0)\ndef f():\n    pass\n"), 2, "every_seconds must be a whole number"),
        (source_with("@scheduled(every_seconds=5)\ndef f(x):\n    pass\n"), 2, "requires x"),
        (source_with("def helper():\n    pass\n"), None, "declares no @scheduled function"),
        ("", None, "the source is empty"),
    ],
)
def test_a_bad_script_is_refused_with_its_line_and_reason(source, line, reason):
    with pytest.raises(InvalidScript) as refused:
        scripts.compile_script("bad", source)

    assert reason in refused.value.reason
    assert refused.value.line == line


@pytest.mark.parametrize("name", ["", "has space", "dots.are.not.allowed", "x" * 65])
def test_script_names_are_checked(name):
    with pytest.raises(InvalidScript, match="script name"):
        scripts.compile_script(name, TWO_JOBS)


@pytest.mark.django_db
def test_creating_a_script_stores_audits_and_schedules_its_jobs(scripts_on, admin_user):
    marker_before = PeriodicTasks.last_change()

    script = scripts.create_script("reports", TWO_JOBS, admin_user)

    assert script.sha256 == scripts.source_hash(TWO_JOBS)
    audit = ScriptAudit.objects.get()
    assert (audit.script_name, audit.action, audit.username, audit.sha256) == (
        "reports",
        "created",
        "root",
        script.sha256,
    )
    rows = dict(PeriodicTask.objects.filter(name__startswith="scripts.").values_list("name", "task"))
    assert rows == {"scripts.reports.nightly": CLUSTERED_TASK, "scripts.reports.refresh": LOCAL_TASK}
    assert PeriodicTasks.last_change() != marker_before


@pytest.mark.django_db
def test_a_refused_script_writes_nothing(scripts_on, admin_user):
    with pytest.raises(InvalidScript):
        scripts.create_script("bad", source_with("@scheduled(cron='nope')\ndef f():\n    pass\n"), admin_user)

    assert not CustomScript.objects.exists()
    assert not ScriptAudit.objects.exists()
    assert not PeriodicTask.objects.filter(name__startswith="scripts.").exists()


@pytest.mark.django_db
def test_uploads_are_refused_while_custom_scripts_are_off(settings, admin_user):
    settings.CUSTOM_SCRIPTS_ENABLED = False

    with pytest.raises(CustomScriptsDisabled):
        scripts.create_script("reports", TWO_JOBS, admin_user)


@pytest.mark.django_db
def test_a_name_is_taken_once(scripts_on, admin_user):
    scripts.create_script("reports", TWO_JOBS, admin_user)

    with pytest.raises(ScriptExists):
        scripts.create_script("reports", TWO_JOBS, admin_user)


@pytest.mark.django_db
def test_editing_replaces_the_jobs_and_disabling_switches_them_off(scripts_on, admin_user):
    scripts.create_script("reports", TWO_JOBS, admin_user)

    scripts.update_script(
        "reports", admin_user, source=source_with("@scheduled(every_seconds=5)\ndef only():\n    pass\n")
    )
    assert list(PeriodicTask.objects.filter(name__startswith="scripts.").values_list("name", "enabled")) == [
        ("scripts.reports.only", True)
    ]

    scripts.update_script("reports", admin_user, enabled=False)
    assert not PeriodicTask.objects.get(name="scripts.reports.only").enabled
    assert list(ScriptAudit.objects.order_by("id").values_list("action", flat=True)) == [
        "created",
        "updated",
        "disabled",
    ]


@pytest.mark.django_db
def test_deleting_removes_the_jobs_and_is_audited(scripts_on, admin_user):
    scripts.create_script("reports", TWO_JOBS, admin_user)

    scripts.delete_script("reports", admin_user)

    assert not PeriodicTask.objects.filter(name__startswith="scripts.").exists()
    assert ScriptAudit.objects.filter(action="deleted", script_name="reports").exists()
    with pytest.raises(ScriptNotFound):
        scripts.delete_script("reports", admin_user)


@pytest.mark.django_db
def test_workers_run_the_source_stored_now_and_nothing_once_disabled(scripts_on, admin_user):
    scripts.create_script("reports", TWO_JOBS, admin_user)
    assert resolve_job("scripts.reports.nightly").function() == "nightly"

    scripts.update_script("reports", admin_user, source=TWO_JOBS.replace('return "nightly"', 'return "edited"'))
    assert resolve_job("scripts.reports.nightly").function() == "edited"

    scripts.update_script("reports", admin_user, enabled=False)
    assert resolve_job("scripts.reports.nightly") is None


@pytest.mark.django_db
def test_compiled_scripts_idle_too_long_are_forgotten(scripts_on, admin_user):
    scripts.create_script("reports", TWO_JOBS, admin_user)
    resolve_job("scripts.reports.nightly")

    assert scripts.expire_compiled_scripts(timedelta(minutes=5)) == 0
    assert scripts.expire_compiled_scripts(timedelta(0)) == 1
    assert resolve_job("scripts.reports.nightly") is not None  # compiled again on use


@pytest.mark.django_db
def test_a_script_job_that_asks_for_a_transaction_leaves_nothing_when_it_fails(scripts_on, admin_user):
    scripts.create_script(
        "cleanup",
        source_with("""
        from django.contrib.auth import get_user_model

        @scheduled(every_seconds=60, transactional=True)
        def two_steps():
            get_user_model().objects.create(username="first-step")
            raise RuntimeError("second step failed")
    """),
        admin_user,
    )
    job = resolve_job("scripts.cleanup.two_steps")
    tick = job.schedule.latest_tick_at_or_before(timezone.now())

    outcome = run_occurrence(job.name, job.schedule, tick, resolve=resolve_job, is_enabled=lambda name: True)

    assert outcome == Occurrence.FAILED
    assert not get_user_model().objects.filter(username="first-step").exists()
    error = JobRun.objects.get().error
    assert 'File "<script cleanup>", line 8' in error
    assert 'raise RuntimeError("second step failed")' in error  # the script's own line, for whoever reads the run


@pytest.mark.parametrize(
    "source, line, reason",
    [
        (source_with("def broken(:\n    pass\n"), 2, "SyntaxError"),
        (source_with("@scheduled(cron='0 0 25 * * ?')\ndef f():\n    pass\n"), 2, "the hour field '25' is not valid"),
        (source_with("@scheduled(every_seconds=0)\ndef f():\n    pass\n"), 2, "every_seconds must be a whole number"),
        (source_with("@scheduled(every_seconds=5)\ndef f(x):\n    pass\n"), 2, "requires x"),
        (source_with("EVERY = 5\n@scheduled(every_seconds=EVERY)\ndef f():\n    pass\n"), 3, "must be literals"),
        (source_with("@scheduled\ndef f():\n    pass\n"), 2, "write @scheduled(cron=...)"),
        (source_with("def outer():\n    @scheduled(every_seconds=5)\n    def f():\n        pass\n"), 3, "top level"),
        (source_with("@scheduled(every_seconds=5, when='now')\ndef f():\n    pass\n"), 2, "no argument when"),
        (
            source_with(
                "@scheduled(every_seconds=5)\ndef f():\n    pass\n@scheduled(every_seconds=6, name='f')\n"
                "def g():\n    pass\n"
            ),
            5,
            "two scheduled jobs",
        ),
        (source_with("def helper():\n    pass\n"), None, "declares no @scheduled function"),
    ],
)
def test_the_web_process_checks_a_script_without_running_it(source, line, reason):
    with pytest.raises(InvalidScript) as refused:
        scripts.check_script("bad", source)

    assert reason in refused.value.reason
    assert refused.value.line == line


def test_checking_a_script_reads_the_same_jobs_its_code_declares(settings):
    checked = {job.name: job for job in scripts.check_script("reports", TWO_JOBS)}
    compiled = {job.name: job for job in scripts.compile_script("reports", TWO_JOBS)}

    assert {name: (job.schedule, job.clustered) for name, job in checked.items()} == {
        name: (job.schedule, job.clustered) for name, job in compiled.items()
    }


@pytest.mark.django_db
def test_uploading_a_script_does_not_run_its_top_level_code(scripts_on, admin_user, tmp_path):
    marker = tmp_path / "ran"
    source = TWO_JOBS + f"\nopen({str(marker)!r}, 'w').close()\nraise SystemExit('top level ran')\n"

    scripts.create_script("quiet", source, admin_user)

    assert not marker.exists()
    assert set(PeriodicTask.objects.filter(name__startswith="scripts.quiet.").values_list("name", flat=True)) == {
        "scripts.quiet.nightly",
        "scripts.quiet.refresh",
    }


@pytest.mark.django_db
def test_switching_custom_scripts_off_stops_them_on_the_node(scripts_on, admin_user, settings):
    from scheduling.beat import NodeAwareScheduler
    from scheduling.local import load_enabled_local_jobs

    scripts.create_script("reports", TWO_JOBS, admin_user)
    settings.CUSTOM_SCRIPTS_ENABLED = False

    assert resolve_job("scripts.reports.nightly") is None
    assert not any(job.name.startswith("scripts.") for job in load_enabled_local_jobs())
    scheduler = object.__new__(NodeAwareScheduler)
    scheduler.Model = PeriodicTask
    assert not NodeAwareScheduler.enabled_models_qs(scheduler).filter(name__startswith="scripts.").exists()
