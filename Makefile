# Two commands for a fresh machine: `make run` (the app) and `make test` (the test suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-stamp

.PHONY: venv run test test-fast bench package lint clean

venv: $(STAMP)

# Rebuilt only when a requirements file changes, so `make run` stays quick.
$(STAMP): requirements.txt requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	touch $(STAMP)

run: venv
	$(PY) main.py

test: venv
	$(PY) -m pytest

test-fast: venv
	$(PY) -m pytest -m "not slow"

bench: venv
	$(PY) main.py bench

package: venv
	$(PY) -m PyInstaller --noconfirm --clean packaging/fashiongan.spec

lint: venv
	$(PY) -m ruff check app models tests main.py

clean:
	rm -rf build dist .pytest_cache
