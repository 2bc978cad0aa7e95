"""Heavylift's project shell: settings, the Celery app, URLs, the web edge, health, dev services, demo.

It sits on top: it may import every app, and no app imports it (they meet it only through settings strings).
"""

from heavylift.celery import app as celery_app

__all__ = ["celery_app"]
