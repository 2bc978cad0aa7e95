"""Settings of a worker whose host clock is off by CLOCK_OFFSET_SECONDS (default -30): the batch test jobs, plus a
patched `django.utils.timezone.now`, as if the machine's clock were wrong."""

import os
from datetime import timedelta

from django.utils import timezone

from tests.batch.worker_settings import *  # noqa: F403

_OFFSET = timedelta(seconds=float(os.environ.get("CLOCK_OFFSET_SECONDS", "-30")))
_host_now = timezone.now
timezone.now = lambda: _host_now() + _OFFSET
