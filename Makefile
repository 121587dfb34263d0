# The two commands of the README:
#   make run    set up and run the whole portal (web, worker, beat, Redis) on SQLite
#   make test   set up and run every check and test on PostgreSQL and Redis
PYTHON ?= python3
VENV := .venv
# `make run` installs what running needs (the product and the emulator); `make test` adds the
# test tools and the benchmarks' rivals.
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test system-packages-run system-packages-test

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet -e '.[emulator]'
	touch $(RUN_STAMP)

$(TEST_STAMP): pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet -e '.[dev,bench]'
	touch $(TEST_STAMP) $(RUN_STAMP)

# Debian packages: installed only when missing (needs root, or sudo).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
define need
	@missing=""; for pair in $(1); do cmd=$${pair%%:*}; pkg=$${pair#*:}; \
	  command -v $$cmd >/dev/null 2>&1 || [ -x /usr/lib/postgresql/*/bin/$$cmd ] || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then echo "Installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; fi
endef

system-packages-run:
	$(call need,redis-server:redis-server)

system-packages-test:
	$(call need,redis-server:redis-server initdb:postgresql chromium:chromium)

run: system-packages-run $(RUN_STAMP)
	DEBUG=$${DEBUG:-true} MICROSOFT_ALLOW_HTTP=$${MICROSOFT_ALLOW_HTTP:-true} \
	  MICROSOFT_ALLOW_INTERNAL_HOSTS=$${MICROSOFT_ALLOW_INTERNAL_HOSTS:-true} \
	  $(VENV)/bin/python manage.py runportal

test: system-packages-test $(TEST_STAMP)
	$(VENV)/bin/python -m tests.run $(ARGS)
