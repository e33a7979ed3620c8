# migval: the single entry point for setting up, running and checking the project.
# A fresh machine needs only python3 (3.11) with pip and venv; `make setup` brings uv.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

UV_VERSION := 0.13.9
# Where `make setup` installs uv when none is on PATH (outside the work tree).
UV_TOOLS_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/migval/uv-$(UV_VERSION)
# The uv on PATH if there is one, else the pinned one from UV_TOOLS_DIR.
ifndef UV
UV := $(or $(shell command -v uv 2>/dev/null),$(UV_TOOLS_DIR)/bin/uv)
endif
# --frozen: install exactly what uv.lock says, and never rewrite it.
RUN := $(UV) run --frozen

HOST ?= 127.0.0.1
PORT ?= 8000
# Extra arguments for pytest, e.g. make test PYTEST_ARGS='-x -k sessions'.
PYTEST_ARGS ?=
# check-migrations: an empty scratch database to check instead of a temporary SQLite
# file, e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/scratch (.ci/run does this).
CHECK_DATABASE_URL ?=
export CHECK_DATABASE_URL
# Arguments for the benchmark, e.g. make bench BENCH_ARGS='--quick' (bench/README.md).
BENCH_ARGS ?=
# The soak's length and extra arguments, e.g. make soak SOAK_MINUTES=1 SOAK_ARGS='--clients 4'.
SOAK_MINUTES ?= 3
SOAK_ARGS ?=

.PHONY: help setup run test lint check-migrations bench soak clean

help: ## list the targets
	@echo "usage: make TARGET"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## /  \1\t/' | expand -t 20

setup: $(UV) ## install uv if missing, then the locked dependencies into .venv
	$(UV) sync --frozen

$(UV_TOOLS_DIR)/bin/uv:
	@echo "uv not found on PATH: installing uv $(UV_VERSION) into $(UV_TOOLS_DIR)"
	python3 -m venv "$(UV_TOOLS_DIR)"
	"$(UV_TOOLS_DIR)/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

run: setup ## migrate the database (DATABASE_URL, default SQLite) and serve on HOST:PORT
	$(RUN) migval db migrate
	@echo "GraphiQL: http://$(HOST):$(PORT)/graphql"
	$(RUN) migval serve --host "$(HOST)" --port "$(PORT)"

test: setup ## run the whole test suite (SQLite and PostgreSQL)
	$(RUN) pytest $(PYTEST_ARGS)

lint: setup ## ruff check and mypy --strict (persistence/ and graph/); runs both
	status=0; \
	$(RUN) ruff check . || status=1; \
	$(RUN) mypy || status=1; \
	exit $$status

check-migrations: setup ## alembic check on a scratch SQLite db (or CHECK_DATABASE_URL)
	scratch="$$(mktemp -d)"; trap 'rm -rf "$$scratch"' EXIT; \
	export DATABASE_URL="$${CHECK_DATABASE_URL:-sqlite+aiosqlite:///$$scratch/check.db}"; \
	$(RUN) migval db migrate; \
	$(RUN) migval db check

bench: setup ## benchmark migval against raw floors on PostgreSQL and SQLite (BENCH_ARGS=)
	UV="$(UV)" $(RUN) python -m bench $(BENCH_ARGS)

soak: setup ## mixed load on a temporary PostgreSQL restarted mid-run; checks every write
	$(RUN) python -m bench.soak --minutes "$(SOAK_MINUTES)" $(SOAK_ARGS)

clean: ## remove caches (keeps .venv and the database file)
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -path ./.venv -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
