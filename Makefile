# chalk-dr: `make test` and `make demo` install what they need into .venv themselves.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint typecheck unit demo stop bench clean system-deps setup

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: lint typecheck
	$(VENV)/bin/pytest -q

# Set up the Prefect server at $PREFECT_API_URL for chalk-dr, idempotently (chalkdr/setup.py): the
# `chalk-dr` process work pool, the locks of every environment in the topology directory
# ($CHALK_DR_TOPOLOGY_DIR, else deployments/), the deployments of prefect.yaml, the automations.
TOPOLOGY_DIR ?= $(or $(CHALK_DR_TOPOLOGY_DIR),deployments)

setup: $(STAMP)
	$(PY) -m chalkdr.setup --topology-dir $(TOPOLOGY_DIR) --deploy

# Debian's PostgreSQL and Chromium, for the `postgres` and `browser` tests (.ci/run calls this
# first; `make test` does not need it: locally those tests skip when the binaries are absent).
# Installs only what is missing; as root, or through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

system-deps:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	if [ -z "$$missing" ]; then echo "system-deps: postgresql and chromium are installed"; exit 0; fi; \
	echo "system-deps: installing$$missing"; \
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing

# A whole game day against the embedded sandbox; the Prefect server stays up for inspection.
demo: $(STAMP)
	$(PY) -m sandbox.demo run

stop: $(STAMP)
	$(PY) -m sandbox.demo stop

bench: $(STAMP)
	$(PY) benchmarks/drill.py
	$(PY) benchmarks/provision.py
	$(PY) benchmarks/recovery.py

clean:
	rm -rf $(VENV) .sandbox .prefect-demo
