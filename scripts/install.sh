#!/usr/bin/env bash
# Install cram into the given Python. Without an NVIDIA GPU, take the CPU build of torch first, so that pip
# does not pull the multi-GB CUDA build; with a GPU, leave torch to pip's default (CUDA) resolution.
set -euo pipefail
PY="${1:-python3}"
if "$PY" -c "import torch" 2>/dev/null; then
    echo "torch $("$PY" -c 'import torch; print(torch.__version__)') already installed"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "NVIDIA GPU found: installing torch with CUDA"
    "$PY" -m pip install torch
else
    echo "no NVIDIA GPU: installing the CPU build of torch"
    # torch==2.13.0 is served as a CPU wheel from this workplace's local disk; elsewhere the CPU index has it.
    "$PY" -m pip install "torch==${CRAM_TORCH_VERSION:-2.13.0}" \
        || "$PY" -m pip install torch --index-url https://download.pytorch.org/whl/cpu
fi
"$PY" -m pip install -e ".[dev]"
