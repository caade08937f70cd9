#!/usr/bin/env bash
# End-to-end demo on bundled data: every tool that exists runs here and says where its outputs are.
# Run through `make demo` (which sets up .venv first), or directly with the tools on PATH.
set -euo pipefail
OUT=${1:-demo-out}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT"
step() { printf '\n== %s\n' "$*" >&2; }

step "dataset: export the digits test split to PNG files + a manifest"
dataset export demo:digits --split test --out "$OUT/digits" > "$OUT/digits.jsonl"
dataset info "$OUT/digits.jsonl" > "$OUT/digits-info.json"

step "dataset: a source/target class split of demo:shapes for transfer experiments"
dataset export "demo:shapes?classes=10&per_class=40" --out "$OUT/shapes" > "$OUT/shapes.jsonl"
dataset split "$OUT/shapes.jsonl" --by classes --classes source:0-4 --classes target:5-9 --relabel \
  --out "$OUT/shapes-tasks" > /dev/null

step "dataset: real photographs shipped with scikit-image / scikit-learn"
dataset export demo:photos --out "$OUT/photos" > "$OUT/photos.jsonl"

cat >&2 <<MSG

Outputs:
  $OUT/digits/            digits test split as PNG (class subfolders) + manifest.jsonl
  $OUT/digits.jsonl       the same manifest, paths relative to this folder
  $OUT/digits-info.json   counts, classes and shapes
  $OUT/shapes-tasks/      source.jsonl and target.jsonl: two different 5-class tasks
  $OUT/photos.jsonl       real photos for immunize
MSG
