# shiftpu: every target sets itself up (a .venv with the project and its dev extras, from PyPI only).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.shiftpu-installed
JOBS ?= 2

.PHONY: setup test test-slow test-rtl test-browser demo wheel bench lint docs clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP) ## create .venv and install shiftpu with its dev extras

test: $(STAMP) ## the test suite (fast: well under 30 minutes on 2 cores)
	$(PY) -m pytest -n $(JOBS) --timeout=1800 -q

test-slow: $(STAMP) ## the long regressions (marked slow), e.g. the full RTL regression
	$(PY) -m pytest -n $(JOBS) --timeout=7200 -q -m slow

test-browser: $(STAMP) ## render the HTML report in headless Chromium (installs Debian's chromium when missing)
	@[ -x /usr/bin/chromium ] || { $$([ "$$(id -u)" = 0 ] || echo sudo) apt-get update && \
		$$([ "$$(id -u)" = 0 ] || echo sudo) apt-get install -y chromium; }
	$(PY) -m pytest -q -m browser

demo: $(STAMP) ## compile the shipped detector and run it on the golden model and the RTL simulation
	$(VENV)/bin/shiftpu demo --out demo_out

wheel: $(STAMP) ## build the shiftpu wheel (dist/shiftpu-<version>-py3-none-any.whl), e.g. to install on a board
	$(PY) -m pip wheel --no-deps --wheel-dir dist .

bench: $(STAMP) ## benchmarks (results in bench/results/, and the README's result tables regenerated from them)
	$(PY) -m bench.run
	$(PY) -m bench.readme --write

lint: $(STAMP)
	$(VENV)/bin/ruff check .

docs: $(STAMP) ## regenerate the generated tables in docs/architecture.md
	$(PY) -m shiftpu.arch.docs --write docs/architecture.md

clean:
	rm -rf build dist demo_out .pytest_cache sim_build
