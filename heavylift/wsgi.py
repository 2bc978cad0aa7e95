import os

from django.core.wsgi import get_wsgi_application

from heavylift.startup import settings_or_exit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "heavylift.settings")
settings_or_exit()

application = get_wsgi_application()

from heavylift.cluster import warn_at_start  # Django is set up only now

warn_at_start("web")
