from django.apps import AppConfig

from fhirjobs.common.registration import register_job_app


class ReindexConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "fhirjobs.reindex"
    label = "reindex"
    verbose_name = "FHIR reindex"

    def ready(self) -> None:
        from fhirjobs.reindex.definition import REINDEX
        from fhirjobs.reindex.services import reindex_changed_parameters
        from fhirstore.custom_params import search_parameters_changed

        register_job_app([REINDEX])  # no FHIR operation: the reindex command and changed SearchParameters start it
        search_parameters_changed.connect(reindex_changed_parameters, dispatch_uid="reindex-changed-parameters")
