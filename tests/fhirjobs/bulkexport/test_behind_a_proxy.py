"""Behind a TLS-terminating proxy, the URLs an export hands out say https:// — once the proxy is trusted."""

import pytest

from tests.fhirjobs.helpers import patient
from tests.fhirstore.helpers import store

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("trusted, scheme", [(True, "https://"), (False, "http://")])
def test_status_and_file_urls_follow_x_forwarded_proto_only_when_trusted(exporter, settings, trusted, scheme):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if trusted else None
    store(patient("p1"))

    response = exporter.fhir.get(
        "/fhir/$export?_type=Patient", HTTP_PREFER="respond-async", HTTP_X_FORWARDED_PROTO="https"
    )
    status_url = response["Content-Location"]
    manifest = exporter.finish(status_url)

    assert status_url.startswith(scheme)
    assert manifest["request"].startswith(scheme) and manifest["output"][0]["url"].startswith(scheme)
