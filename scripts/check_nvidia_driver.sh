#!/usr/bin/env bash
# Fail with one clear line unless this node's NVIDIA driver is new enough for the `gpu` extra's
# torch 2.14 (CUDA 13.0 wheels need driver >= 580). Run by cluster.yaml's setup on every node:
#   check_nvidia_driver.sh [--if-present] [MIN_MAJOR]
# --if-present: a node without a working nvidia-smi (the CPU head) passes; without it, that fails.
set -euo pipefail
if_present=0
if [[ "${1:-}" == "--if-present" ]]; then if_present=1; shift; fi
need="${1:-580}"
if ! command -v nvidia-smi >/dev/null 2>&1 || ! version="$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1 | tr -d '[:space:]')" || [[ -z "$version" ]]; then
  if (( if_present )); then
    echo "check_nvidia_driver: no NVIDIA GPU on $(hostname) (nothing to check)"
    exit 0
  fi
  echo "check_nvidia_driver: FAIL: no working NVIDIA driver on this GPU node (nvidia-smi missing or failing); the gpu extra (torch 2.14, CUDA 13.0) needs driver >= $need" >&2
  exit 1
fi
major="${version%%.*}"
if ! [[ "$major" =~ ^[0-9]+$ ]]; then
  echo "check_nvidia_driver: FAIL: cannot read the driver version from nvidia-smi ('$version')" >&2
  exit 1
fi
if (( major < need )); then
  echo "check_nvidia_driver: FAIL: NVIDIA driver $version is too old: the gpu extra's torch 2.14 (CUDA 13.0) needs driver >= $need; use an image with a newer driver (e.g. a current Deep Learning AMI) or install driver >= $need" >&2
  exit 1
fi
echo "check_nvidia_driver: NVIDIA driver $version >= $need: OK"
