# stylempi: `make demo` sets up and runs the demo; `make test` sets up and runs the tests.
# The demo needs only torch and stylempi[mpi]; the tests add the [test,azureml] extras and
# Azurite (npm), so a machine without npm can still run the demo.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export OMPI_ALLOW_RUN_AS_ROOT ?= 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM ?= 1
export PRTE_MCA_rmaps_default_mapping_policy ?= :oversubscribe

.PHONY: setup-demo setup demo test bench clean

$(BIN)/stylempi: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[mpi]"
	touch $@

$(VENV)/.test-extras: $(BIN)/stylempi setup.py
	$(BIN)/pip install -q -e ".[mpi,test,azureml,onnx]"
	touch $@

node_modules/.bin/azurite-blob: package.json
	npm install --no-audit --no-fund --silent
	touch $@

# What the demo (and the benchmarks) need.
setup-demo: $(BIN)/stylempi

# Everything the tests need.
setup: setup-demo $(VENV)/.test-extras node_modules/.bin/azurite-blob

demo: setup-demo
	$(BIN)/python -m stylempi.tools.demo

test: setup
	$(BIN)/python -m pytest -q -rs tests

bench: setup-demo
	$(BIN)/python benchmarks/all.py

clean:
	rm -rf $(VENV) node_modules demo-output
