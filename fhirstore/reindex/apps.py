from django.apps import AppConfig


class ReindexConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "fhirstore.reindex"
    label = "reindex"
    verbose_name = "FHIR reindex"

    def ready(self) -> None:
        from batch.api import register
        from fhirstore.custom_params import search_parameters_changed
        from fhirstore.reindex.definition import REINDEX
        from fhirstore.reindex.services import reindex_changed_parameters

        register(REINDEX)
        search_parameters_changed.connect(reindex_changed_parameters, dispatch_uid="reindex-changed-parameters")
