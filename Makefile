# make demo   set up, then embed the bundled sample on the embedded database
# make test   set up, then lint, type-check and run the whole test suite
# make bench    set up, then run the pytest-benchmark groups (prints figures, ~20 min with the scaling sweep)
# make compare  set up, then print every comparison as a table with ratios (~20 min)
# make scaling  set up, then run the speedup sweep (~6 min) and redraw the notebook's figures

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.embedlib-installed

.PHONY: setup demo test lint pytest bench compare scaling figures clean

setup: $(STAMP)

# torch first, pinned: it installs the CPU build from a local file on these
# machines, where an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/embedlib demo

lint: setup
	$(BIN)/ruff check embedlib tests benchmarks notebooks conftest.py
	$(BIN)/mypy

pytest: setup
	$(BIN)/pytest

test: lint pytest

bench: setup
	$(BIN)/pytest benchmarks --benchmark-only --benchmark-columns=min,mean,stddev,rounds

compare: setup
	$(BIN)/python -m benchmarks.compare

scaling: setup
	$(BIN)/pytest benchmarks/test_scaling.py --benchmark-only -q
	$(MAKE) figures

figures: setup
	cd notebooks && ../$(BIN)/jupyter nbconvert --to notebook --execute speedup.ipynb --output /tmp/embedlib-speedup.ipynb

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .benchmarks
