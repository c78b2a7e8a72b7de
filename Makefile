# Two entry points for a fresh Debian 12 machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
UV_VERSION := 0.13.9
OUT ?= out

.PHONY: demo test lint bench-plan sample-data clean

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q uv==$(UV_VERSION)

$(VENV)/.runtime: pyproject.toml | $(UV)
	VIRTUAL_ENV=$(VENV) $(UV) pip install -q -e .
	touch $@

# libvirt-python builds against libvirt-dev, which install-test-deps.sh brings.
$(VENV)/.test: pyproject.toml | $(UV)
	bash scripts/install-test-deps.sh
	VIRTUAL_ENV=$(VENV) $(UV) pip install -q -e ".[test,libvirt,ray]"
	touch $@ $(VENV)/.runtime

# The nightly job on the embedded synthetic cluster: writes $(OUT)/plan.json and $(OUT)/report.html.
demo: $(VENV)/.runtime
	$(BIN)/advisor demo --out $(OUT)

# Everything the tests need (apt, as root: Prometheus, exporters, Chromium, libvirt and QEMU 10 for the
# two-host test bed; Python packages), then the suite.
test: $(VENV)/.test
	bash scripts/install-test-deps.sh
	$(BIN)/pytest

lint: $(VENV)/.test
	$(BIN)/ruff check advisor pipelines tests bench
	$(BIN)/mypy advisor pipelines

# The planner against FFD/PABFD/PABFD-2D on the optimizer issue's instance (200 hosts, 2,000 VMs).
bench-plan: $(VENV)/.runtime
	cd bench && ../$(BIN)/python solver.py --hosts 200 --vms 2000 --seed 1 --sequencing

# Regenerate the sample data shipped in data/ (produced by the synthetic generator).
sample-data: $(VENV)/.runtime
	$(BIN)/python -m advisor.collect.make_sample

clean:
	rm -rf $(VENV) $(OUT) mlruns.db mlartifacts mlruns
