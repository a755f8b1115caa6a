# Two commands for a fresh machine: `make run` (the app) and `make test` (the test suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Stamps: the run-time requirements are installed (STAMP), and the development ones too (DEV_STAMP).
STAMP := $(VENV)/.requirements-stamp
DEV_STAMP := $(VENV)/.requirements-dev-stamp

.PHONY: venv venv-dev run test test-fast bench package lint clean

venv: $(STAMP)

venv-dev: $(DEV_STAMP)

# Each stamp is rebuilt only when a requirements file it covers changes, so `make run` stays quick.
$(STAMP): requirements.txt requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	touch $(STAMP)

$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(DEV_STAMP)

run: venv
	$(PY) main.py

test: venv-dev
	$(PY) -m pytest

test-fast: venv-dev
	$(PY) -m pytest -m "not slow"

bench: venv
	$(PY) main.py bench

package: venv-dev
	$(PY) -m PyInstaller --noconfirm --clean packaging/fashiongan.spec

lint: venv-dev
	$(PY) -m ruff check app models tests main.py

clean:
	rm -rf build dist .pytest_cache
