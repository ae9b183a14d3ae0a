# trustmap: `make demo` sets everything up and runs the main job; `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
BENCH  := .venv-bench
# torch is pinned to the CPU wheel: every install passes the constraints file.
PIP     = $(VENV)/bin/python -m pip install -c constraints.txt
export OMP_NUM_THREADS := 1
export MPLBACKEND := Agg

.PHONY: install demo test bench docs clean dnnlocate-env bench-dnnlocate

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(PIP) -q -e ".[all,dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/trustmap demo

test: install
	$(VENV)/bin/python -m pytest -q

# The documentation site, offline, into docs/_build/html. DOCS_QUICK=1: every tutorial at the
# smaller sizes of the CI build (TRUSTMAP_DOCS_QUICK=1). A warning (missing reference, failing
# tutorial) fails the build. -E re-reads every page, so a warning is never hidden by an
# incremental build (tutorials still rerun only when their source changed).
DOCS_QUICK ?=
$(VENV)/.docs-installed: $(VENV)/.installed
	$(PIP) -q -e ".[docs]"
	touch $@

docs: $(VENV)/.docs-installed
	$(if $(DOCS_QUICK),TRUSTMAP_DOCS_QUICK=1) $(VENV)/bin/python -m sphinx -W --keep-going -E -q -b html \
		-d docs/_build/doctrees docs docs/_build/html
	@echo "site: docs/_build/html/index.html"

# Peers (captum, zennit, quantus, lime, grad-cam, shap) are installed WITHOUT their dependencies into
# .venv-bench/site and run by .venv's python: one torch (the CPU wheel above), never a second one; their
# other dependencies come from the [all] extras, torchvision is stubbed by benchmarks/peers.py.
PEERS := $(BENCH)/site
$(PEERS)/.installed: benchmarks/requirements-peers.txt $(VENV)/.installed
	rm -rf $(PEERS)
	$(VENV)/bin/python -m pip install -q --no-deps --target $(PEERS) -r benchmarks/requirements-peers.txt
	touch $@

bench: install $(PEERS)/.installed
	TRUSTMAP_PEERS=$(PEERS) $(VENV)/bin/python benchmarks/run.py --out benchmarks/RESULTS.md

# The real dnn-locate 0.2 beside trustmap's localizer (benchmarks/bench_dnnlocate.py): TensorFlow (CPU)
# + tf-keras + dnn-locate in their own venv, never in .venv; tf-keras and dnn-locate without their declared
# dependencies (the `tensorflow` GPU wheel; the deprecated `sklearn` name, whose build fails on purpose).
TFVENV    ?= .venv-tf
PYTHON311 ?= python3.11
$(TFVENV)/.installed: benchmarks/requirements-dnnlocate.txt benchmarks/requirements-dnnlocate-nodeps.txt
	rm -rf $(TFVENV)
	$(PYTHON311) -m venv $(TFVENV)
	$(TFVENV)/bin/python -m pip install -q -r benchmarks/requirements-dnnlocate.txt
	$(TFVENV)/bin/python -m pip install -q --no-deps -r benchmarks/requirements-dnnlocate-nodeps.txt
	TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2 $(TFVENV)/bin/python -c \
		"import tensorflow as tf, dnn_locate; print('dnn-locate imports; TF', tf.__version__, 'tf-keras', __import__('tf_keras').__version__)"
	touch $@

dnnlocate-env: $(TFVENV)/.installed

bench-dnnlocate: install $(TFVENV)/.installed
	PYTHONPATH=src $(VENV)/bin/python benchmarks/bench_dnnlocate.py --tf-python $(TFVENV)/bin/python

clean:
	rm -rf $(VENV) $(BENCH) $(TFVENV) runs build *.egg-info src/*.egg-info docs/_build docs/tutorials docs/api docs/_generated
