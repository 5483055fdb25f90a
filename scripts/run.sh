#!/usr/bin/env bash
# The README's main command: set up, then compile the default spec (per-block summary), export it
# to ONNX and verify the export against PyTorch with ONNX Runtime (verification table).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
spec="${1:-specs/xception.yaml}"
.venv/bin/xbuild compile "$spec"
.venv/bin/xbuild export "$spec" --out build/
.venv/bin/xbuild verify build/
