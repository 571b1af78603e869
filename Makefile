# JADE Factory. `make help` lists the targets.
SHELL := /bin/bash
PY := .venv/bin/python
DATA ?= sample
OUT ?= runs/$(notdir $(basename $(DATA)))
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt

.PHONY: help setup generate pretrain test test-slow test-gpu bench lint format submit

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-12s %s\n", $$1, $$2}'

.venv/.installed: pyproject.toml constraints.txt
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

setup: .venv/.installed ## create .venv with the pinned dependencies (CPU torch; idempotent)

generate: setup ## the whole factory for one manifest: DATA=sample|cc3m|path OUT=runs/$(DATA)
	.venv/bin/jade run $(DATA) --out $(OUT)

test: setup ## the test suite CI runs (fast tier, about 10 minutes on 2 CPUs)
	$(PY) -m pytest -q

test-slow: setup ## the slow tier (long end-to-end runs; none yet: exit 5 "no tests" is not a failure)
	$(PY) -m pytest -q -m slow || [ $$? -eq 5 ]

test-gpu: setup ## GPU tests (a GPU machine with the vllm extra installed)
	$(PY) -m pytest -q -m gpu || [ $$? -eq 5 ]

bench: setup ## the benchmarks (generate+filter vs a per-question loop, ingest): runs/bench/bench.json
	$(PY) -m bench --out runs/bench

lint: setup ## ruff check + format check
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

format: setup ## ruff format
	.venv/bin/ruff format . && .venv/bin/ruff check --fix .
