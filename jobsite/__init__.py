"""Heavylift's Django project: settings, the Celery app, URLs."""
from jobsite.celery import app as celery_app

__all__ = ["celery_app"]
