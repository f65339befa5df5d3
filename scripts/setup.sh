#!/usr/bin/env bash
# One-time set-up on a fresh machine: a virtualenv in .venv with jaxfit and its
# test tools. torch==2.13.0 (CPU) goes in first so that nimblephysics, which
# needs torch, does not pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# On other machines, TORCH_INDEX=https://download.pytorch.org/whl/cpu gets the CPU build.
.venv/bin/python -m pip install -q "torch==2.13.0" ${TORCH_INDEX:+--index-url "$TORCH_INDEX"}
.venv/bin/python -m pip install -q -e '.[test]'
