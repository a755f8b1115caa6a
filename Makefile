# Two commands for a fresh machine: `make run` (the app) and `make test` (the test suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Stamps: the run-time requirements are installed (STAMP), the development ones too (DEV_STAMP), and the
# language model's test server (LLM_STAMP: requirements-llm.txt, for `make test` only).
STAMP := $(VENV)/.requirements-stamp
DEV_STAMP := $(VENV)/.requirements-dev-stamp
LLM_STAMP := $(VENV)/.requirements-llm-stamp
# pip's cache inside the venv: the llama-cpp-python wheel built from its sdist (about 8.5 minutes on 2 cores,
# one compile job at a time) is built once; a CI run that keeps .venv reuses it.
PIP_CACHE := $(VENV)/pip-cache
CMAKE_BUILD_PARALLEL_LEVEL ?= 1

.PHONY: venv venv-dev venv-llm run test test-fast bench package lint clean

venv: $(STAMP)

venv-dev: $(DEV_STAMP)

venv-llm: $(LLM_STAMP)

# Each stamp is rebuilt only when a requirements file it covers changes, so `make run` stays quick.
$(STAMP): requirements.txt requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	touch $(STAMP)

$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(DEV_STAMP)

$(LLM_STAMP): $(DEV_STAMP) requirements-llm.txt
	CMAKE_BUILD_PARALLEL_LEVEL=$(CMAKE_BUILD_PARALLEL_LEVEL) PIP_CACHE_DIR=$(PIP_CACHE) \
		nice -n 10 $(PY) -m pip install --quiet -r requirements-llm.txt
	touch $(LLM_STAMP)

run: venv
	$(PY) main.py

# The whole suite, the language-model tests against llama.cpp's real server included (they fail, not skip,
# without it). test-fast skips them where the server is not installed.
test: venv-dev venv-llm
	FASHIONGAN_REQUIRE_LLM_SERVER=1 $(PY) -m pytest

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
