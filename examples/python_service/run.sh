#!/usr/bin/env bash
# Runs demo.sql with rpcop's Python environment (made on first use by
# scripts/python-env: pyarrow and the kit) first on PATH.
set -euo pipefail
cd "$(dirname "$0")/../.."
python="$(scripts/python-env | tail -n 1)"
export PATH="$(dirname "$python"):$PATH"
exec cargo run --release -- -f examples/python_service/demo.sql
