"""The admin is the durable dashboard: runs, scripts and their audit; script changes go through the service."""

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from scheduling import catalog
from scheduling.models import CustomScript, JobRun, RunOutcome, ScriptAudit
from scheduling.registry import ScheduledJob
from scheduling.runs import Occurrence
from scheduling.schedules import EverySeconds
from scheduling.sync import sync_declared_jobs
from scheduling.tasks import run_clustered_job

pytestmark = pytest.mark.django_db

SCRIPT = "from scheduling import scheduled\n\n@scheduled(every_seconds=60)\ndef tidy():\n    pass\n"


@pytest.fixture
def root_client(client):
    client.force_login(get_user_model().objects.create_superuser("root", password="pw"))
    return client


def test_runs_scripts_and_audit_are_listed(root_client):
    JobRun.objects.create(
        job_name="app.jobs.tidy",
        tick=timezone.now(),
        node="n1",
        process="h:1",
        started_at=timezone.now(),
        outcome=RunOutcome.SUCCEEDED,
    )

    for page in ("jobrun", "customscript", "scriptaudit"):
        response = root_client.get(f"/admin/scheduling/{page}/")
        assert response.status_code == 200, page
    assert b"app.jobs.tidy" in root_client.get("/admin/scheduling/jobrun/").content


def test_adding_a_script_in_the_admin_validates_audits_and_schedules(root_client, settings):
    settings.CUSTOM_SCRIPTS_ENABLED = True

    refused = root_client.post(
        "/admin/scheduling/customscript/add/", {"name": "tidy", "source": SCRIPT.replace("60", "0"), "enabled": "on"}
    )
    assert refused.status_code == 200
    assert b"line 3: every_seconds must be a whole number of seconds" in refused.content
    assert not CustomScript.objects.exists()

    accepted = root_client.post(
        "/admin/scheduling/customscript/add/", {"name": "tidy", "source": SCRIPT, "enabled": "on"}
    )
    assert accepted.status_code == 302
    assert ScriptAudit.objects.get().action == "created"


def test_the_admin_checks_a_script_statically_without_running_its_code(root_client, settings, tmp_path):
    """Issue #29 item 6: the admin's form ran the script's top-level code in the web process."""
    settings.CUSTOM_SCRIPTS_ENABLED = True
    marker = tmp_path / "ran-in-the-web-process"
    source = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('x')\n" + SCRIPT

    accepted = root_client.post(
        "/admin/scheduling/customscript/add/", {"name": "tidy", "source": source, "enabled": "on"}
    )

    assert accepted.status_code == 302
    assert not marker.exists()
    refused = root_client.post(
        "/admin/scheduling/customscript/add/", {"name": "other", "source": "import os\nos.getcwd()\n", "enabled": "on"}
    )
    assert refused.status_code == 200 and b"no @scheduled function" in refused.content


def test_the_admin_cannot_add_scripts_while_they_are_off(root_client, settings):
    settings.CUSTOM_SCRIPTS_ENABLED = False

    assert root_client.get("/admin/scheduling/customscript/add/").status_code == 403


def test_the_script_list_says_when_scripts_are_switched_off_and_not_when_they_are_on(root_client, settings):
    settings.CUSTOM_SCRIPTS_ENABLED = False
    assert b"Custom scripts are switched off on this node" in root_client.get("/admin/scheduling/customscript/").content

    settings.CUSTOM_SCRIPTS_ENABLED = True
    assert b"switched off" not in root_client.get("/admin/scheduling/customscript/").content


def noop() -> None:
    pass


@pytest.fixture
def declared_jobs():
    from scheduling.registry import ScheduledJob
    from scheduling.schedules import CronSchedule, EverySeconds
    from scheduling.sync import sync_declared_jobs

    sync_declared_jobs(
        [
            ScheduledJob(
                "app.jobs.tidy", noop, CronSchedule("0 17 * * * ?", "UTC"), clustered=True, transactional=False
            ),
            ScheduledJob("app.jobs.cache", noop, EverySeconds(5), clustered=False, transactional=False),
        ]
    )
    JobRun.objects.create(
        job_name="app.jobs.tidy",
        tick=timezone.now(),
        node="n1",
        process="h:1",
        started_at=timezone.now(),
        finished_at=timezone.now(),
        outcome=RunOutcome.FAILED,
        error="Traceback: boom",
    )


def test_the_scheduled_jobs_page_lists_clustered_and_local_jobs_with_runs_and_failures(root_client, declared_jobs):
    html = root_client.get("/admin/scheduling/scheduledjobschedule/").content.decode()

    assert "app.jobs.tidy" in html and "clustered" in html and "cron 0 17 * * * ? (UTC)" in html
    assert "app.jobs.cache" in html and "local" in html and "every 5 s" in html
    assert "outcome-failed" in html and "run-failed" in html and "Traceback: boom" in html
    for action in ("pause_jobs", "resume_jobs", "run_jobs_now"):
        assert action in html


def test_pause_and_resume_from_the_scheduled_jobs_page(root_client, declared_jobs):
    from django_celery_beat.models import PeriodicTask

    row = PeriodicTask.objects.get(name="app.jobs.tidy")
    root_client.post("/admin/scheduling/scheduledjobschedule/", {"action": "pause_jobs", "_selected_action": [row.pk]})
    assert not PeriodicTask.objects.get(pk=row.pk).enabled
    assert "paused" in root_client.get("/admin/scheduling/scheduledjobschedule/").content.decode()
    root_client.post("/admin/scheduling/scheduledjobschedule/", {"action": "resume_jobs", "_selected_action": [row.pk]})
    assert PeriodicTask.objects.get(pk=row.pk).enabled


def test_viewing_scheduled_jobs_does_not_allow_pausing_them(client, declared_jobs):
    from django.contrib.auth.models import Permission
    from django_celery_beat.models import PeriodicTask

    viewer = get_user_model().objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_scheduledjobschedule"))
    client.force_login(viewer)
    row = PeriodicTask.objects.get(name="app.jobs.tidy")

    page = client.get("/admin/scheduling/scheduledjobschedule/")
    client.post("/admin/scheduling/scheduledjobschedule/", {"action": "pause_jobs", "_selected_action": [row.pk]})

    assert page.status_code == 200 and "pause_jobs" not in page.content.decode()
    assert PeriodicTask.objects.get(pk=row.pk).enabled


def test_a_job_paused_in_the_admin_is_not_run_until_it_is_resumed(root_client, job_registry, monkeypatch):
    """The real check a scheduler worker makes (`scheduling.sync.is_enabled`), driven from the admin."""
    calls = []
    job = ScheduledJob(
        "app.jobs.pausable", lambda: calls.append(1), EverySeconds(60), clustered=True, transactional=False
    )
    job_registry.add(job)
    monkeypatch.setattr(catalog, "registry", job_registry)
    sync_declared_jobs([job])
    row = PeriodicTask.objects.get(name=job.name)
    tick = EverySeconds(60).next_tick_after(timezone.now())  # never stale during the test
    changelist = "/admin/django_celery_beat/periodictask/"

    paused = root_client.post(changelist, {"action": "disable_tasks", "_selected_action": [row.pk]})
    assert paused.status_code == 302
    assert run_clustered_job(job.name, job.schedule.to_dict(), tick.isoformat()) == Occurrence.NOT_SCHEDULED
    assert calls == [] and not JobRun.objects.exists()

    resumed = root_client.post(changelist, {"action": "enable_tasks", "_selected_action": [row.pk]})
    assert resumed.status_code == 302
    assert run_clustered_job(job.name, job.schedule.to_dict(), tick.isoformat()) == Occurrence.SUCCEEDED
    assert calls == [1]


def test_each_row_has_its_own_pause_resume_and_run_now_buttons_naming_the_job_in_the_message(
    root_client, declared_jobs, monkeypatch
):
    sent = []
    monkeypatch.setattr("scheduling.operations.run_now", lambda name: sent.append(name))
    tidy = PeriodicTask.objects.get(name="app.jobs.tidy")
    cache = PeriodicTask.objects.get(name="app.jobs.cache")
    html = root_client.get("/admin/scheduling/scheduledjobschedule/").content.decode()
    assert f'formaction="/admin/scheduling/scheduledjobschedule/{tidy.pk}/pause/"' in html
    assert f'formaction="/admin/scheduling/scheduledjobschedule/{tidy.pk}/run-now/"' in html
    assert f"{cache.pk}/run-now/" not in html, "a local job has no single run to start"

    paused = root_client.post(f"/admin/scheduling/scheduledjobschedule/{tidy.pk}/pause/", {"back": "list"}, follow=True)
    assert not PeriodicTask.objects.get(pk=tidy.pk).enabled
    assert [str(message) for message in paused.context["messages"]] == ["Paused app.jobs.tidy"]
    assert f'formaction="/admin/scheduling/scheduledjobschedule/{tidy.pk}/resume/"' in paused.content.decode()

    ran = root_client.post(f"/admin/scheduling/scheduledjobschedule/{tidy.pk}/run-now/", {"back": "job"})
    assert ran.status_code == 302 and ran.url == f"/admin/scheduling/scheduledjobschedule/{tidy.pk}/change/"
    assert sent == ["app.jobs.tidy"]
    root_client.post(f"/admin/scheduling/scheduledjobschedule/{tidy.pk}/resume/", {})
    assert PeriodicTask.objects.get(pk=tidy.pk).enabled
    assert root_client.get(f"/admin/scheduling/scheduledjobschedule/{tidy.pk}/pause/").status_code == 405


def test_the_row_buttons_need_the_change_permission(client, declared_jobs):
    from django.contrib.auth.models import Permission

    viewer = get_user_model().objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_scheduledjobschedule"))
    client.force_login(viewer)
    tidy = PeriodicTask.objects.get(name="app.jobs.tidy")

    assert "/pause/" not in client.get("/admin/scheduling/scheduledjobschedule/").content.decode()
    assert client.post(f"/admin/scheduling/scheduledjobschedule/{tidy.pk}/pause/").status_code == 403
    assert PeriodicTask.objects.get(pk=tidy.pk).enabled


def test_a_jobs_page_shows_its_buttons_and_tick_history_with_the_ticks_not_run(root_client, declared_jobs):
    tidy = PeriodicTask.objects.get(name="app.jobs.tidy")

    html = root_client.get(f"/admin/scheduling/scheduledjobschedule/{tidy.pk}/change/").content.decode()

    assert 'id="pause-job"' in html and 'id="run-job-now"' in html
    assert "Tick history" in html and "outcome-not-run" in html, "an hourly job's earlier ticks left no run"
    assert "Traceback: boom" in html and '<span class="chip">run now</span>' in html, "the failed run is off-schedule"
    cache = PeriodicTask.objects.get(name="app.jobs.cache")
    local = root_client.get(f"/admin/scheduling/scheduledjobschedule/{cache.pk}/change/").content.decode()
    assert "Tick history" not in local and 'id="run-job-now"' not in local and "logged, not recorded" in local


def test_the_recent_runs_filter_by_job_and_problems_without_upsetting_the_changelist(root_client, declared_jobs):
    now = timezone.now()
    JobRun.objects.create(
        job_name="batch.maintenance",
        tick=now,
        node="n1",
        process="h:1",
        started_at=now,
        finished_at=now,
        outcome=RunOutcome.SUCCEEDED,
    )
    page = "/admin/scheduling/scheduledjobschedule/"

    problems = root_client.get(page, {"runs": "problems", "state": "active"})
    one_job = root_client.get(page, {"runs_job": "batch.maintenance"})

    assert problems.status_code == 200 and "?e=1" not in problems.get("Location", "")
    assert [run.job_name for run in problems.context["recent_runs"]] == ["app.jobs.tidy"]
    assert [run.job_name for run in one_job.context["recent_runs"]] == ["batch.maintenance"]
    assert '<option value="batch.maintenance" selected>' in one_job.content.decode()
