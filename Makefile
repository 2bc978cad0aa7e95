# Two commands for a new user: `make demo` and `make test`. Everything else is a step they share.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ENV := set -a && . ./.services/env && set +a &&

.PHONY: demo test services stop install migrate bench

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

install: $(VENV)/.installed

services: install
	$(PY) -m heavylift.devservices start

migrate: services
	$(ENV) $(PY) manage.py migrate --noinput

demo: migrate
	$(ENV) BATCH_DIAGNOSTIC_JOBS=true SECURE_COOKIES=false $(PY) manage.py demo  # plain http on loopback

test: services
	$(ENV) $(PY) -m pytest

bench: migrate
	$(ENV) $(PY) -m bench

stop:
	test ! -x $(PY) || $(PY) -m heavylift.devservices stop
