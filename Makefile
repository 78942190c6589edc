# Two commands for a new machine: `make run` and `make test`. Everything else is optional.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test bench lint clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[embedded,test]'
	touch $(STAMP)

install: $(STAMP)

# Starts Postgres and Redis embedded under .data/ (unless PARTICIPANTS_DATABASE_URL /
# PARTICIPANTS_REDIS_URL are set), migrates, seeds demo data, runs the API and the workers.
run: $(STAMP)
	$(BIN)/participants dev

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .data .pytest_cache
