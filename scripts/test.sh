#!/usr/bin/env bash
# The README's test command: set up, lint, type-check the TensorRT code, run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check xception_build exporters tests examples
.venv/bin/mypy exporters/tensorrt_backend.py
set +e
.venv/bin/pytest -n 2 "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: failing on purpose" >&2
  exit 1
fi
exit "$status"
