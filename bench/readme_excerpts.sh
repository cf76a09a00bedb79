#!/usr/bin/env bash
# Rerun the commands the README shows and print their output, so every README excerpt can be regenerated.
#
#   bash bench/readme_excerpts.sh                  # the README's own budgets (cpu-demo 5 min, cpu-smoke 30 steps)
#   PGOLF_EXCERPT_QUICK=1 bash bench/readme_excerpts.sh   # short budgets, to check the script (minutes, not an excerpt)
#
# Environment: PGOLF_EXCERPT_DIR (work folder, default /tmp/pgolf-excerpts; the runs land in its runs/, as the
# README's relative paths say), PGOLF_EXCERPT_SECONDS (cpu-demo wallclock: default the preset's 300 s, quick 20;
# quick also scores 32,768 validation tokens), PGOLF_EXCERPT_STEPS (cpu-smoke steps per seed: default the preset's,
# quick 2; quick runs 2 seeds instead of 3), PGOLF_EXCERPT_ONLY (space-separated section
# names to run: run typo presets train quantize eval info pack compare report seeds submit bundle).
# Each section prints "### <section>: <command>" then the command's stdout+stderr; a failing command stops the
# script (set -e), so a stale README command is found here first. PGOLF_PROGRESS_EVERY is set to 10 s so plain
# progress lines stay few. Run from the repository root with the venv active.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QUICK="${PGOLF_EXCERPT_QUICK:-0}"
DIR="${PGOLF_EXCERPT_DIR:-/tmp/pgolf-excerpts}"
# the README's commands exactly in a full run; the quick check adds short budgets (and says so in each command)
RUN_EXTRA=(); SMOKE_EXTRA=(); VAL=(); EVAL_VAL=()
if [[ "$QUICK" == 1 ]]; then
  RUN_EXTRA=(--train.max_wallclock_seconds "${PGOLF_EXCERPT_SECONDS:-20}" --data.val_max_tokens 32768)
  SMOKE_EXTRA=(--train.iterations "${PGOLF_EXCERPT_STEPS:-2}"); EVAL_VAL=(--val-max-tokens 32768)
else
  [[ -n "${PGOLF_EXCERPT_SECONDS:-}" ]] && RUN_EXTRA=(--train.max_wallclock_seconds "$PGOLF_EXCERPT_SECONDS")
  [[ -n "${PGOLF_EXCERPT_STEPS:-}" ]] && SMOKE_EXTRA=(--train.iterations "$PGOLF_EXCERPT_STEPS")
fi
STEPS="${PGOLF_EXCERPT_STEPS:-$([[ "$QUICK" == 1 ]] && echo 2 || echo 30)}"
ONLY="${PGOLF_EXCERPT_ONLY:-run typo presets train quantize eval info pack compare report seeds submit bundle}"
export PGOLF_PROGRESS_EVERY="${PGOLF_PROGRESS_EVERY:-10}"

mkdir -p "$DIR"
cd "$DIR"
want() { [[ " $ONLY " == *" $1 "* ]]; }
quote() {  # the command as one would type it (arguments with spaces or quotes in double quotes)
  local out=() a
  for a in "$@"; do if [[ "$a" =~ [[:space:]\'\"] ]]; then out+=("\"$a\""); else out+=("$a"); fi; done
  echo "${out[*]}"
}
show() {  # show SECTION CMD...: print the command as the README writes it, then run it (output as is)
  local section="$1"; shift
  echo "### $section: \$ $(quote "$@")"
  "$@" 2>&1
  echo
}
fails() {  # like show, for a command the README shows failing (exit status 2 expected)
  local section="$1"; shift
  echo "### $section: \$ $(quote "$@")"
  if "$@" 2>&1; then echo "(expected an error, got exit status 0)"; return 1; fi
  echo
}

echo "# pgolf README excerpts — $(date -u +%Y-%m-%dT%H:%MZ), git $(git -C "$REPO" rev-parse --short HEAD)," \
     "$(getconf _NPROCESSORS_ONLN) cores, quick=$QUICK, in $DIR"
echo

if want run; then
  rm -rf runs/demo-readme
  show run pgolf run --run.name demo-readme "${RUN_EXTRA[@]}"
fi
if want typo; then fails typo pgolf run --train.matrx_lr 0.02; fi
if want presets; then show presets pgolf presets record-11l; fi
if want train; then
  rm -rf runs/tr1
  show train pgolf train --preset cpu-smoke --run.name tr1 --train.iterations 10
fi
if want quantize; then
  show quantize pgolf quantize runs/demo-readme --codec brotli --out runs/demo-readme/brotli.pgolf
fi
if want eval; then show eval pgolf eval runs/demo-readme/brotli.pgolf --stride 64 "${EVAL_VAL[@]}"; fi
if want info; then show info pgolf info runs/demo-readme/model.pgolf; fi
if want pack; then show pack pgolf pack runs/demo-readme/model.pgolf --codec rans; fi
if want compare; then
  show compare pgolf compare --a-values 1.88276292,1.88156874,1.88220393 --b-values 1.88976776,1.89110239,1.88919190
fi
if want report; then show report pgolf report runs/demo-readme; fi
SEEDS=3; [[ "$QUICK" == 1 ]] && SEEDS=2
if want seeds; then
  rm -rf runs/smoke-s* runs/smoke-lr02-s* runs/smoke-seeds.json runs/smoke-lr02-seeds.json
  show seeds pgolf seeds "$SEEDS" --preset cpu-smoke --run.name smoke --train.max_wallclock_seconds 0 \
    "${SMOKE_EXTRA[@]}"
  show seeds pgolf seeds "$SEEDS" --preset cpu-smoke --run.name smoke-lr02 --train.max_wallclock_seconds 0 \
    "${SMOKE_EXTRA[@]}" --train.matrix_lr 0.02
  show compare pgolf compare runs/smoke-seeds.json runs/smoke-lr02-seeds.json
fi
if want submit; then
  rm -rf records/excerpt
  show submit pgolf submit runs/smoke-seeds.json --name "cpu-smoke, $STEPS steps, Muon LR 0.04" \
    --baseline runs/smoke-lr02-seeds.json --author "pgolf demo" --blurb "..." --out records/excerpt
  echo "### submit: the records README's Bytes section"
  sed -n '/^## Bytes/,/^## Reproduction/p' records/excerpt/README.md
  echo
fi
if want bundle; then
  rm -rf bundle-demo bundle-sota
  show bundle pgolf bundle --out bundle-demo
  show bundle pgolf bundle --out bundle-sota --preset sota-sp8192 --quant.recipe sota-lqer --pack.codec rans-ctx \
    --eval.mode ttt-phased
fi
echo "# done: $(date -u +%H:%MZ)"
