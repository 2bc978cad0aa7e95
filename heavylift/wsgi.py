import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "heavylift.settings")

application = get_wsgi_application()

from heavylift.cluster import warn_at_start  # Django is set up only now

warn_at_start("web")
