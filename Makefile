# rds-csi: every command a user or CI needs. `make run` and `make test` set up
# everything themselves on a fresh machine (Python >= 3.11 required).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
WORK   ?= .work

.PHONY: help venv run test lint proto bench clean e2e-vm

help:
	@echo "make run    start rds-csi locally and show how to talk to it"
	@echo "make test   build the venv and run every test tier this machine allows"
	@echo "make lint   ruff + mypy (strict on rds_csi)"
	@echo "make proto  regenerate the CSI stubs from proto/csi.proto"
	@echo "make bench  run the benchmarks and print their figures"
	@echo "make e2e-vm kernel tier: setup.sh (qemu, Debian kernel cache) then the micro-VM tests"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

run: venv
	@$(PY) e2e/run_local.py --workdir $(WORK)

test: venv
	$(PY) e2e/tiers.py

lint: venv
	$(VENV)/bin/ruff check driver simulator e2e loadtest proto kind
	$(VENV)/bin/mypy driver/rds_csi
	$(VENV)/bin/mypy simulator/rds_sim

proto: venv
	$(PY) proto/generate.py

bench: venv
	$(PY) e2e/bench.py

e2e-vm: venv
	sh e2e/kernel/setup.sh
	$(PY) -m pytest -v e2e/kernel

clean:
	rm -rf $(VENV) $(WORK) .pytest_cache .mypy_cache .ruff_cache
