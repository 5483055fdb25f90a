#!/usr/bin/env bash
# Creates .venv (if missing) and installs xception-build with the CPU onnxruntime and dev tools.
# torch is held to constraints.txt so that pip never swaps in a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q -c constraints.txt "torch==2.13.0"
.venv/bin/pip install -q -c constraints.txt -e ".[cpu,dev]"
# tensorrt-stubs declares a dependency on the real tensorrt, which cannot install here: --no-deps.
.venv/bin/pip install -q --no-deps "tensorrt-stubs>=10.13,<11"
