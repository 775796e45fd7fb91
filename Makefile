# Two commands for users: `make demo` and `make test`. Everything they need is installed here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS := dev,postgres,snowflake,bigquery,dbt
export DBT_SEND_ANONYMOUS_USAGE_STATS := false
export DAGSTER_DISABLE_TELEMETRY := 1

.PHONY: install system-deps sf-cli test lint format demo dev emulator bench clean

# The demo needs only the package; the tests also need the warehouse drivers and test tools.
$(BIN)/.installed-base: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e .
	touch $@

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[$(EXTRAS)]'
	touch $@ $(BIN)/.installed-base

install: $(BIN)/.installed

demo: $(BIN)/.installed-base
	$(BIN)/python -m sf_activation.demo

# PostgreSQL server binaries for the warehouse tests (Debian's package).
system-deps:
	@if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && ! command -v pg_ctl >/dev/null 2>&1; then \
	  echo "Installing PostgreSQL (Debian package) for the warehouse tests"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql >/dev/null; \
	fi

# The Salesforce CLI, an independent client the emulator tests drive
# (sf_activation_tests/test_emulator_clients.py), from the npm registry into .sf_activation/npm.
# Best effort: without npm, or offline, it says so and that test is skipped. Pinned: newer CLIs
# pull @jsforce/jsforce-node 3.11+, which needs Node 22; the override keeps one that runs on 20.
SF_CLI_DIR := .sf_activation/npm
SF_CLI_VERSION := 2.138.0
SF_JSFORCE_VERSION := 3.10.15
sf-cli:
	@if ! command -v npm >/dev/null 2>&1; then \
	  echo "npm not found: the Salesforce CLI test will be skipped"; \
	elif [ ! -f $(SF_CLI_DIR)/.installed-$(SF_CLI_VERSION) ]; then \
	  mkdir -p $(SF_CLI_DIR); \
	  printf '{"private": true, "dependencies": {"@salesforce/cli": "%s"}, "overrides": {"@jsforce/jsforce-node": "%s"}}\n' \
	    $(SF_CLI_VERSION) $(SF_JSFORCE_VERSION) > $(SF_CLI_DIR)/package.json; \
	  echo "Installing the Salesforce CLI $(SF_CLI_VERSION) into $(SF_CLI_DIR) (npm, about 290 MB)"; \
	  if timeout 900 npm install --prefix $(SF_CLI_DIR) --no-audit --no-fund --loglevel=error --fetch-retries=1 >/dev/null; then \
	    touch $(SF_CLI_DIR)/.installed-$(SF_CLI_VERSION); \
	  else \
	    rm -rf $(SF_CLI_DIR)/node_modules; echo "npm install failed (offline?): the Salesforce CLI test will be skipped"; \
	  fi; \
	fi

# Most tests wait on subprocesses, servers and the emulator's latency rather than compute,
# so they run in parallel worker processes (pytest-xdist), each starting its own emulators
# and servers on free loopback ports. TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= 4
test: install system-deps sf-cli
	$(BIN)/pytest -q -n $(TEST_WORKERS)

lint: install
	$(BIN)/ruff check sf_activation sf_activation_tests bench
	$(BIN)/ruff format --check sf_activation sf_activation_tests bench

format: install
	$(BIN)/ruff format sf_activation sf_activation_tests bench
	$(BIN)/ruff check --fix sf_activation sf_activation_tests bench

# A standalone emulator on https://127.0.0.1:8443 (needs only the package, like `make demo`).
emulator: $(BIN)/.installed-base
	$(BIN)/sf-activation emulator --port 8443

clean:
	rm -rf $(VENV) .sf_activation .pytest_cache .ruff_cache

# The Dagster UI on http://127.0.0.1:3000 with the example models, on what `make demo`
# left: its warehouse, its emulator org, its sync state and rejects (all in DEMO_DIR, the
# paths sf_activation/demo.py uses) and its Dagster runs in .dagster_home. The emulator is
# started here on that org and stopped when `dagster dev` exits. Without a demo run first,
# the demo warehouse is built and everything else starts empty.
DEMO_DIR := .sf_activation/demo
dev: $(BIN)/.installed-base
	@mkdir -p $(DEMO_DIR); rm -f $(DEMO_DIR)/emulator-dev.ready
	@test -f $(DEMO_DIR)/warehouse.duckdb || $(BIN)/python -c 'from pathlib import Path; from sf_activation.demo_data import build_demo_warehouse; build_demo_warehouse(Path("$(DEMO_DIR)/warehouse.duckdb"))'
	@$(BIN)/sf-activation emulator --port 0 --state $(DEMO_DIR)/emulator-org.json --tls-dir $(DEMO_DIR)/emulator-tls --ready-file $(DEMO_DIR)/emulator-dev.ready & emulator=$$!; \
	trap 'kill $$emulator 2>/dev/null' EXIT INT TERM; \
	for _ in $$(seq 1 150); do test -s $(DEMO_DIR)/emulator-dev.ready && break; sleep 0.2; done; \
	test -s $(DEMO_DIR)/emulator-dev.ready || { echo "emulator did not start"; exit 1; }; \
	eval "$$($(BIN)/python -c 'import json, shlex; r = json.load(open("$(DEMO_DIR)/emulator-dev.ready")); names = {"instance_url": "SALESFORCE_INSTANCE_URL", "access_token": "SALESFORCE_ACCESS_TOKEN", "ca_bundle": "SALESFORCE_CA_BUNDLE"}; print(" ".join("export " + v + "=" + shlex.quote(str(r[k])) + ";" for k, v in names.items() if r.get(k)))')"; \
	export SF_ACTIVATION_WAREHOUSE_URL="duckdb:///$$PWD/$(DEMO_DIR)/warehouse.duckdb"; \
	export SF_ACTIVATION_STATE_URL="$$PWD/$(DEMO_DIR)/state" SF_ACTIVATION_REJECTS_URL="$$PWD/$(DEMO_DIR)/rejects"; \
	export SF_ACTIVATION_MODELS_DIR="$$PWD/models"; \
	echo "emulator at $$SALESFORCE_INSTANCE_URL (org $(DEMO_DIR)/emulator-org.json); state and rejects in $(DEMO_DIR); starting dagster dev"; \
	mkdir -p .dagster_home && cp dagster.yaml .dagster_home/dagster.yaml; \
	DAGSTER_HOME="$$PWD/.dagster_home" $(BIN)/dagster dev
