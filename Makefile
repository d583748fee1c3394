# plures: every target creates or reuses the local virtual environment and installs what it needs,
# so each one works alone as the first command on a fresh machine.
#
#   make bench          the default suite end to end (records + leaderboard)      [SUITE=quick]
#   make smoke          a two-minute bench (2 methods, 1 epoch, subsets) in its own namespace quick+<hash>
#   make test           the test suite (slow real-data tests excluded), one worker per CPU  [PYTEST_WORKERS=-n0: serial]
#   make leaderboard    rebuild your leaderboards from your records in results/runs [ARGS=--reference: the published ones]
#   make test-slow      the long real-data tests
#   make sweep SWEEP=benchmark/sweeps/tiny.toml   submit a sweep (job arrays + leaderboard job)  [ARGS=--dry-run]
#   make sweep-status SWEEP=...                    each run: pending, running, done, failed  [ARGS=--resubmit-failed]
#   make gpu-check      on a GPU: facts, CUDA tests, perf, peers, gpu suite, paper epochs in 8 min (no venv)  [ARGS=--smoke: CPU]
#   make docs           the documentation site into site/ (mkdocs build --strict)  [SITE_DIR=...]
#   make docs-serve     the documentation site at http://127.0.0.1:8000, rebuilt on every edit  [ARGS=-a HOST:PORT]
#
# Data: DATA_DIR (default $PLURES_DATA_DIR, else ../shared/data when that folder exists, else ./data: python -m benchmark's rule).

PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
SUITE    ?= quick
SWEEP    ?= benchmark/sweeps/tiny.toml
ARGS     ?=
PYTEST_ARGS ?=
# pytest-xdist: one worker per CPU (each test runs on one torch thread); the SLURM and browser tests share one worker
PYTEST_WORKERS ?= -n auto --dist loadgroup
DATA_DIR ?= $(or $(PLURES_DATA_DIR),$(if $(wildcard ../shared/data/.),../shared/data,data))
STAMP    := $(VENV)/.plures-installed
DOCS_STAMP := $(VENV)/.plures-docs-installed
SITE_DIR ?= site

export PLURES_DATA_DIR := $(DATA_DIR)

.PHONY: bench smoke test test-slow leaderboard sweep sweep-status perf gpu-check docs docs-serve venv clean-venv help

help:
	@sed -n '1,14p' Makefile

# pip, not uv/poetry: torch and torchvision come from pip's configured sources (local wheels on the
# plures build machines); the range in pyproject.toml admits them.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

# The docs extra on top of the test one (the site's pages are generated from the installed package).
$(DOCS_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,docs]'
	@touch $(DOCS_STAMP)

bench: $(STAMP)
	$(BIN)/python -m benchmark bench $(SUITE) --data-dir "$(DATA_DIR)" $(ARGS)

# train.compile=false: seven steps cannot repay the compilation the quick suite's full runs do
SMOKE_SETS := --only deterministic,mimo --set train.epochs=1 --set train.compile=false --set data.train_subset=2000 \
              --set eval.test_subset=1000 --set eval.corruptions=none --set eval.ood=[] --set eval.latency_repeats=1

smoke: $(STAMP)
	$(BIN)/python -m benchmark bench quick $(SMOKE_SETS) --data-dir "$(DATA_DIR)" $(ARGS)

leaderboard: $(STAMP)
	$(BIN)/python -m benchmark leaderboard $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_WORKERS) $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)

perf: $(STAMP)
	$(BIN)/python -m benchmark perf $(ARGS)

# NO_MKDOCS_2_WARNING: the theme's banner about its successor, printed on every build.
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict --site-dir "$(SITE_DIR)"

docs-serve: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs serve --strict $(ARGS)

sweep: $(STAMP)
	$(BIN)/python -m benchmark sweep "$(SWEEP)" $(ARGS)

sweep-status: $(STAMP)
	$(BIN)/python -m benchmark sweep-status "$(SWEEP)" $(ARGS)

# The machine's own python (torch with CUDA), the checkout on PYTHONPATH, nothing installed.
gpu-check:
	PYTHONPATH="$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH}" $(PYTHON) -m benchmark.tools.gpu_check $(ARGS)
