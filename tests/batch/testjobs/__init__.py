"""A job only the acceptance tests run: it writes down every chunk it finishes, and can be made to fail.

Worker processes load it through `tests.batch.worker_settings`; the test process registers it itself.
"""
