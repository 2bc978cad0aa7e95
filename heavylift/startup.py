"""Start-up of every entry point (manage.py, the Celery app, the WSGI app): settings read first.

A bad or missing variable then stops the process with one line naming it, rather than a 40-line traceback
from deep inside Django, Celery or gunicorn.
"""

from __future__ import annotations

import sys

# Gunicorn's "worker failed to boot": its master stops instead of restarting workers that cannot start.
CONFIGURATION_ERROR_EXIT_STATUS = 3


def settings_or_exit() -> None:
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    try:
        settings.INSTALLED_APPS  # noqa: B018 -- reading one setting imports the settings module
    except ImproperlyConfigured as error:
        sys.stderr.write(f"heavylift: configuration error: {error}\n")
        raise SystemExit(CONFIGURATION_ERROR_EXIT_STATUS) from None
