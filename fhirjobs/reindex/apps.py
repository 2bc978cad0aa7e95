from django.apps import AppConfig


class ReindexConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "fhirjobs.reindex"
    label = "reindex"
    verbose_name = "FHIR reindex"

    def ready(self) -> None:
        from batch.api import register
        from fhirstore.custom_params import search_parameters_changed
        from fhirjobs.reindex.definition import REINDEX
        from fhirjobs.reindex.services import reindex_changed_parameters

        register(REINDEX)
        search_parameters_changed.connect(reindex_changed_parameters, dispatch_uid="reindex-changed-parameters")
