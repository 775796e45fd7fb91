# Two commands for users: `make demo` and `make test`. Everything they need is installed here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS := dev,postgres,snowflake,bigquery,dbt
export DBT_SEND_ANONYMOUS_USAGE_STATS := false
export DAGSTER_DISABLE_TELEMETRY := 1

.PHONY: install system-deps test lint format demo dev emulator clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[$(EXTRAS)]'
	touch $@

install: $(BIN)/.installed

# PostgreSQL server binaries for the warehouse tests (Debian's package).
system-deps:
	@if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && ! command -v pg_ctl >/dev/null 2>&1; then \
	  echo "Installing PostgreSQL (Debian package) for the warehouse tests"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql >/dev/null; \
	fi

test: install system-deps
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check sf_activation sf_activation_tests bench
	$(BIN)/ruff format --check sf_activation sf_activation_tests bench

format: install
	$(BIN)/ruff format sf_activation sf_activation_tests bench
	$(BIN)/ruff check --fix sf_activation sf_activation_tests bench

emulator: install
	$(BIN)/sf-activation emulator --port 8443

clean:
	rm -rf $(VENV) .sf_activation .pytest_cache .ruff_cache
