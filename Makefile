# Two commands for a new user: `make demo` and `make test`. Everything else is a step they share.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ENV := set -a && . ./.services/env && set +a &&

.PHONY: demo test services stop install install-test migrate bench chromium typecheck

# The runtime set for the demo; the test and benchmark tools (playwright, smart-fetch, pytest, ...) on top for
# `make test` and `make bench`.
$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.installed-test: requirements.txt requirements-test.txt $(VENV)/.installed
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

services: install
	$(PY) heavylift/devservices.py start

migrate: services
	$(ENV) $(PY) manage.py migrate --noinput

demo: migrate
	$(ENV) BATCH_DIAGNOSTIC_JOBS=true SECURE_COOKIES=false $(PY) manage.py demo  # plain http on loopback

# The browser tests drive Debian's Chromium (Playwright never downloads a browser of its own): apt installs it
# where this is root or sudo asks no password; elsewhere a warning here, and again at the end of pytest's run.
chromium:
	@command -v chromium >/dev/null || { \
	    if [ "$$(id -u)" = 0 ]; then as_root=; elif sudo -n true 2>/dev/null; then as_root="sudo -n"; \
	    else echo "WARNING: chromium is missing and cannot be installed (not root): the browser tests will be SKIPPED" >&2; exit 0; fi; \
	    $$as_root apt-get update -qq && $$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
	    || echo "WARNING: apt-get could not install chromium: the browser tests will be SKIPPED" >&2; }

# Three pytest processes on two cores: most tests of the suite wait on real worker, beat and web processes, so a third
# keeps the cores busy (tests/isolation.py gives each its own Redis database, pytest-django its own test database;
# each module runs whole in one of them, longest first: tests/conftest.py). TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 3

# Tests marked `serial` (pytest.ini) run afterwards on their own: beside two other test processes on 2 cores, a lease
# of a few seconds or a crash that must catch a commit before the WAL writer met a machine too busy to show it.
# A test that fails in the parallel phase runs once more, alone, at the end: the run fails if it fails again; if it
# passes alone, the log's last lines still name it (a timing assumption that a busy machine broke: make it robust).
FAILED_BESIDE_OTHERS := test-artifacts/failed-beside-other-test-processes.txt
test: install-test services chromium
	$(ENV) status=0; mkdir -p test-artifacts; rm -f $(FAILED_BESIDE_OTHERS); \
	HEAVYLIFT_FAILED_TESTS=$$( [ "$(TEST_WORKERS)" = 0 ] || echo $(FAILED_BESIDE_OTHERS) ) \
	    $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not serial" || status=$$?; \
	if [ $$status = 1 ] && [ -s $(FAILED_BESIDE_OTHERS) ]; then \
	    status=0; sort -u $(FAILED_BESIDE_OTHERS) | xargs -d '\n' $(PY) -m pytest || status=$$?; \
	fi; \
	$(PY) -m pytest -m serial || status=$$?; \
	if [ -s $(FAILED_BESIDE_OTHERS) ]; then \
	    echo "WARNING: these tests failed beside other test processes, then ran again alone (see above):"; \
	    sort -u $(FAILED_BESIDE_OTHERS) | sed 's/^/    /'; \
	fi; \
	exit $$status

# mypy.ini names the modules; django-stubs' plugin loads the settings, hence the services' env.
typecheck: install-test services
	$(ENV) $(VENV)/bin/mypy

bench: install-test migrate
	$(ENV) $(PY) -m bench

stop:
	test ! -x $(PY) || $(PY) heavylift/devservices.py stop
