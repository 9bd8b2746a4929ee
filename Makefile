# gapkit developer tasks. Everything runs inside .venv, which `make venv` builds on demand.

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# Stamp written after a successful install; re-install when pyproject.toml changes.
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
BENCH_SCRIPTS := benchmarks/soap.py benchmarks/fit.py benchmarks/predict.py benchmarks/ntk.py benchmarks/uq.py \
	benchmarks/baselines.py benchmarks/noise.py

.PHONY: venv test test-fast lint demo bench clean distclean

venv: $(STAMP)

$(VPY):
	$(PYTHON) -m venv $(VENV)

# torch first, with this exact spec: it resolves to the CPU wheel here, whereas letting the
# resolver pick torch for gapkit's range can pull gigabytes of CUDA libraries.
$(STAMP): pyproject.toml | $(VPY)
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[dev]"
	touch $@

# the whole suite, slow tests included (what .ci/run runs)
test: venv
	$(VPY) -m pytest -q -ra tests

# the inner loop: everything not marked slow (tutorials, MD runs, tests over ~5 s)
test-fast: venv
	$(VPY) -m pytest -q -ra -m "not slow" tests

# ruff on all Python code; mypy on the typed public modules ([tool.mypy] in pyproject.toml)
lint: venv
	$(VENV)/bin/ruff check gapkit tests benchmarks tutorials
	$(VENV)/bin/mypy

demo: venv
	$(VPY) -m gapkit.demo

$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(PIP) install -e ".[bench]"
	touch $@

bench: $(BENCH_STAMP)
	@set -e; for script in $(BENCH_SCRIPTS); do \
		echo "== $$script"; \
		$(VPY) $$script; \
	done

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .hypothesis demo_output benchmarks/results
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# clean, and also remove the virtual environment.
distclean: clean
	rm -rf $(VENV)
