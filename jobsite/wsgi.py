import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jobsite.settings")

application = get_wsgi_application()

from jobsite.cluster import warn_at_start  # Django is set up only now

warn_at_start("web")
