# Set-up and the two everyday jobs. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup photos demo test bench

setup: $(STAMP) photos

# pip, up to three tries: a download cut short or a registry's passing error is not a broken set-up. A retry skips
# pip's cache, in case the cache holds what was cut short. -qq prints errors only: this machine's pip config lists
# local package folders that lack most of these packages, and pip warns of each, which buried the one error in CI's log.
PIP_TRIES = echo "pip install $(1)"; for try in 1 2 3; do \
	  if [ $$try = 1 ]; then cache=; else cache=--no-cache-dir; fi; \
	  $(PY) -m pip install -qq $$cache $(1) && break; \
	  if [ $$try = 3 ]; then echo "make: pip install $(1) failed 3 times" >&2; exit 1; fi; \
	  echo "make: pip install $(1) failed (try $$try of 3); trying again in 30 s" >&2; sleep 30; \
	done

$(STAMP): requirements.txt requirements-nodeps.txt
	$(PYTHON) -m venv $(VENV)
	@$(call PIP_TRIES,-r requirements.txt)
	@$(call PIP_TRIES,--no-deps -r requirements-nodeps.txt)
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
