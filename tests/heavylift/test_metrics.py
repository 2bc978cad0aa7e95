"""`GET /metrics`: operators only, the metric names and labels Prometheus and the Grafana dashboard rely on,
counters that move with the work, and values added up across processes (multiprocess mode)."""

import os
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from batch.control import start_job
from batch.maintenance import run_maintenance_pass
from jobsite.tokens import token_for
from tests.batch.helpers import count_records, emit
from tests.jobsite.helpers import with_token
from tests.processes import PROJECT_DIR

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def prometheus(django_user_model) -> APIClient:
    """What Prometheus scrapes with: a service account's token with the `control` scope (the account is granted
    `jobsite.operate`: `control` is for operators only)."""
    from django.contrib.auth.models import Permission

    account = django_user_model.objects.create_user("prometheus")
    account.user_permissions.add(Permission.objects.get(codename="operate"))
    return with_token(token_for(account, scopes=["control"]))


def samples(api: APIClient) -> dict[tuple[str, frozenset], float]:
    response = api.get("/metrics")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def test_only_operators_may_read_the_metrics(django_user_model, admin_client, prometheus):
    client = with_token(token_for(django_user_model.objects.create_user("client"), scopes=["fhir:read"]))
    django_user_model.objects.create_user("plain", password="pw")
    plain_session = APIClient()
    plain_session.login(username="plain", password="pw")

    assert APIClient().get("/metrics").status_code == 401
    assert client.get("/metrics").status_code == 403
    assert plain_session.get("/metrics").status_code == 403
    assert admin_client.get("/metrics").status_code == 200
    assert prometheus.get("/metrics").status_code == 200


def test_a_completed_job_moves_the_counters_and_every_metric_is_named_and_labelled(define_job, bus, prometheus):
    job = define_job(lambda b: b.first_step("plan", emit(3)).last_step("work", count_records(2)))
    before = samples(prometheus)

    start_job(job.id, {}, node_id="metrics-node", module_id="batch")
    bus.drain()
    run_maintenance_pass()
    fhir_status = str(prometheus.get("/fhir/metadata").status_code)
    after = samples(prometheus)

    assert value(after, "heavylift_jobs", definition=job.id, status="COMPLETED") == 1
    assert value(after, "heavylift_jobs", definition=job.id, status="FAILED") == 0, "every status, zeros too"
    finished = {"definition": job.id, "outcome": "completed"}
    assert (
        value(after, "heavylift_chunks_finished_total", step="work", **finished)
        - value(before, "heavylift_chunks_finished_total", step="work", **finished)
        == 3
    )
    assert value(after, "heavylift_chunks_finished_total", step="plan", **finished) == 1
    assert value(after, "heavylift_chunk_duration_seconds_count", definition=job.id, step="work") == 3
    assert value(after, "heavylift_chunk_duration_seconds_bucket", definition=job.id, step="work", le="+Inf") == 3
    assert value(after, "heavylift_maintenance_pass_duration_seconds_count") > value(
        before, "heavylift_maintenance_pass_duration_seconds_count"
    )
    assert (
        value(after, "heavylift_http_request_duration_seconds_count", api="fhir", method="GET", status=fhir_status) >= 1
    )
    names = {name for name, _ in after}
    assert {"heavylift_live_workers", "heavylift_queue_depth", "heavylift_queue_oldest_message_age_seconds"} <= names


def test_the_cluster_gauges_show_a_waiting_node_s_queue(prometheus, define_job, bus):
    job = define_job(lambda b: b.first_step("plan", emit(1)).last_step("work", count_records()))
    start_job(job.id, {}, node_id="waiting-node", module_id="batch")  # announced, no worker takes it

    found = samples(prometheus)

    node = {"node": "waiting-node", "module": "batch"}
    assert value(found, "heavylift_live_workers", **node) == 0
    assert value(found, "heavylift_queue_oldest_message_age_seconds", **node) >= 0
    assert ("heavylift_queue_oldest_message_age_seconds", frozenset(node.items())) in found


def test_counters_of_other_processes_are_added_up_from_the_multiprocess_directory(prometheus, settings, tmp_path):
    """Gunicorn's and Celery's pool processes each write their own file; /metrics reads them all."""
    script = (
        "import django; django.setup(); from batch.metrics import chunk_ran; "
        "chunk_ran('ELSEWHERE', 'step', 'completed', 0.2)"
    )
    environment = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "heavylift.settings",
    }
    for _ in range(2):
        subprocess.run([sys.executable, "-c", script], cwd=PROJECT_DIR, env=environment, check=True, timeout=120)
    settings.PROMETHEUS_MULTIPROC_DIR = str(tmp_path)

    found = samples(prometheus)

    assert (
        value(found, "heavylift_chunks_finished_total", definition="ELSEWHERE", step="step", outcome="completed") == 2
    )
    assert value(found, "heavylift_chunk_duration_seconds_sum", definition="ELSEWHERE", step="step") == pytest.approx(
        0.4
    )
