# `make pipeline` sets everything up and runs the full pipeline; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
KERAS_HOME ?= $(HOME)/.keras
WEIGHTS ?= ../shared/weights
export PATH := $(BIN):$(PATH)

.PHONY: setup weights browser pipeline lint test test-fast bench tracking-server

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt -e .
	touch $@

# Seed Keras' cache with the offline ImageNet weights so weights="imagenet" needs no download.
weights:
	@mkdir -p $(KERAS_HOME)/models
	@if [ -d "$(WEIGHTS)" ]; then for f in $(WEIGHTS)/*.h5; do \
	  [ -e "$(KERAS_HOME)/models/$$(basename $$f)" ] || cp "$$f" "$(KERAS_HOME)/models/"; done; \
	else echo "note: $(WEIGHTS) not found; Keras will fetch the ImageNet weights itself"; fi

setup: $(VENV)/.installed weights

# Debian's Chromium for the web app's browser test (Playwright drives it; Playwright downloads nothing).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
	  || echo "note: could not install Debian's chromium; the browser test will fail"

# DATA=/path/to/kaggle-folder runs on another copy of the Kaggle data (recomposes params.yaml).
pipeline: setup
	@if [ -n "$(DATA)" ]; then skin-cancer compose data.root=$(DATA); fi
	dvc repro

# A shared, authenticated MLflow server on PostgreSQL, on loopback (docs/scaling-out.md); users:
# scripts/tracking-server add-user NAME [--permission READ|EDIT|MANAGE]; stop: scripts/tracking-server stop .tracking
tracking-server: setup
	scripts/tracking-server start .tracking 5000

lint: setup
	ruff check .
	ruff format --check .

# Every tier, one pytest-xdist worker per core, each test file on one worker (the end-to-end tests
# build on one project), handed out in the order tests/conftest.py gives them: the longest file
# first. (Not --dist loadgroup: with pytest 9.2 it ignores xdist_group marks,
# pytest-dev/pytest-xdist#1386.)
test: setup browser lint
	python -m pytest -q -n auto --dist loadfile --no-loadscope-reorder

# The unit tier: pure functions and small synthetic images, no training; one worker per core.
test-fast: setup
	python -m pytest -q -n auto tests/unit

bench: setup
	python bench/pipeline.py
