# Two commands for a new user: `make demo` and `make test`. Everything else is a step they share.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ENV := set -a && . ./.services/env && set +a &&

.PHONY: demo test services stop install install-test migrate bench

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

test: install-test services
	$(ENV) $(PY) -m pytest

bench: install-test migrate
	$(ENV) $(PY) -m bench

stop:
	test ! -x $(PY) || $(PY) heavylift/devservices.py stop
