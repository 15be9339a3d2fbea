# Two commands on a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.stmorph-installed
DEMO_OUT ?= stmorph_demo

.PHONY: venv demo test lint format docs bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# torch is pinned to the build that lies on this machine's disk, installed before anything can
# ask pip for another one; the package itself only sets lower bounds.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet torch==2.14.1 torchvision==0.29.1
	$(PIP) install --quiet -e ".[test,doc]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/stmorph demo --out $(DEMO_OUT)

test: $(STAMP)
	$(VENV)/bin/ruff check
	$(VENV)/bin/ruff format --check
	MPLBACKEND=Agg $(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile  # one file per worker: its fixtures run once

format: $(STAMP)
	$(VENV)/bin/ruff check --fix
	$(VENV)/bin/ruff format

docs: $(STAMP)
	$(PY) docs/make_reliability.py
	$(VENV)/bin/sphinx-build -q -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) docs/_build $(DEMO_OUT)
