"""`$upload-external-code-system` over HTTP: a thin view over `services`.

`POST /fhir/CodeSystem/$upload-external-code-system` (Parameters: system, file…, version?, makeCurrent?)
starts a TERMINOLOGY_UPLOAD job. With `Prefer: respond-async` it answers 202 with the job's status URL
(the control API's `GET /control/jobs/<id>`) in Content-Location; without, 200 with a Parameters naming the
job and that URL (the job runs in the background either way). The caller needs the `terminology` scope,
which only operators get by default.
"""

from __future__ import annotations

from django.urls import reverse

from fhirjobs.common.http import job_named, kicked_off, preferences
from fhirjobs.terminology.parameters import parse_upload_request
from fhirjobs.terminology.services import start_upload
from fhirstore.http import FhirView, read_json_body
from jobsite.models import Scope


class UploadView(FhirView):
    required_scope = Scope.TERMINOLOGY

    def post(self, request):
        job = start_upload(parse_upload_request(read_json_body(request)), started_by=request.user.get_username())
        status_url = request.build_absolute_uri(reverse("batch-job", args=[job.id]))
        if "respond-async" in preferences(request):
            return kicked_off(f"Upload started as job {job.id}", status_url)
        return job_named(job.id, status_url)
