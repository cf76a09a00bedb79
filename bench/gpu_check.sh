#!/usr/bin/env bash
# The prepared device check (bench/gpu_check.py): one CUDA GPU, < 8 minutes, one JSON + a table, exit 1 on any
# failed stage. Reads device settings, never changes them.
#   bench/gpu_check.sh                       # writes gpu_check.json (or $OUT/gpu_check.json when $OUT is set)
#   bench/gpu_check.sh --dry-run             # CPU, tiny sizes (what CI runs)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python
[ -x .venv/bin/python ] && PY=.venv/bin/python
OUT_JSON="${OUT:-.}/gpu_check.json"
exec timeout 480 "$PY" bench/gpu_check.py --out "$OUT_JSON" "$@"
