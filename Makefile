# Set-up and the two everyday jobs. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup photos demo test bench

setup: $(STAMP) photos

$(STAMP): requirements.txt requirements-nodeps.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	touch $(STAMP)

# every time: it checks each photo's hash (milliseconds) and fetches again only what is missing or damaged
photos: | $(STAMP)
	$(PY) scripts/fetch_demo.py

demo: setup
	$(PY) run.py render sequences/demo.toml

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) bench/projection.py
