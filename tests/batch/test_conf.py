"""The batch settings as the engine reads them."""

from datetime import timedelta

from batch.conf import batch_settings


def test_retries_back_off_by_the_configured_steps_and_the_last_one_repeats(settings):
    settings.BATCH_RETRY_BACKOFF_SECONDS = (1.0, 5.0, 30.0)

    waits = [batch_settings().retry_backoff(errors) for errors in (1, 2, 3, 4, 9)]

    assert waits == [timedelta(seconds=s) for s in (1, 5, 30, 30, 30)]


def test_no_backoff_configured_means_retry_at_once(settings):
    settings.BATCH_RETRY_BACKOFF_SECONDS = ()

    assert batch_settings().retry_backoff(1) == timedelta(0)
