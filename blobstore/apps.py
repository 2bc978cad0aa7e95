from django.apps import AppConfig


class BlobstoreConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "blobstore"
    verbose_name = "Files in the database"
