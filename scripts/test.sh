#!/usr/bin/env bash
# The README's test command: set up, lint, type-check, run the whole suite (any arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check xception_build exporters tests examples
# Types of the whole code base; the TensorRT API itself is checked against a repaired copy of
# tensorrt-stubs by tests/exporters/test_tensorrt_backend.py (the stubs as shipped do not parse).
.venv/bin/mypy xception_build exporters
set +e
.venv/bin/pytest -n 2 "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: failing on purpose" >&2
  exit 1
fi
exit "$status"
