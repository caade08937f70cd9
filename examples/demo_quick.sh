#!/usr/bin/env bash
# One small step of every tool, composed through pipes and files, ending in one report: a smoke test of a
# machine's install (`make demo-quick`, about two minutes on two cores). `make demo` is the full tour.
set -euo pipefail
OUT=${1:-demo-quick}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT"
cd "$OUT"
step() { printf '== %s\n' "$*" >&2; }

step "dataset: 16 noisy test digits as PNGs -> $OUT/digits/, manifest $OUT/digits.jsonl"
dataset export "demo:digits?background=noisy" --split test --limit 16 --out digits -q > digits.jsonl
step "advtrain: a tiny ResNet, one epoch -> $OUT/cnn.safetensors (+ cnn.config.yaml, cnn.metrics.jsonl); clean and PGD accuracy -> $OUT/robustness.jsonl"
advtrain train --data "demo:digits?background=noisy" --split train --arch tiny_resnet --epochs 1 -q \
  --out cnn.safetensors > cnn.metrics.jsonl
advtrain eval --model cnn.safetensors --data digits.jsonl --eps 0,0.25 --steps 2 -q > robustness.jsonl
step "certify: certified predictions of the tiny ResNet's column ablations -> $OUT/certified.jsonl"
certify run digits.jsonl --model cnn.safetensors --ablation-size 8 --stride 4 --patch-sizes 1,2 -q > certified.jsonl
step "ablate: missingness-bias curves, black patches -> $OUT/curve.jsonl"
ablate curve digits.jsonl --model cnn.safetensors --fill black --patch-size 4 --step 16 -q > curve.jsonl
step "unadv-patch: patches for the tiny ResNet, 5 steps -> $OUT/patches.safetensors, eval -> $OUT/patches-eval.jsonl"
unadv-patch train --model cnn.safetensors --data digits.jsonl --patch-size 8 --steps 5 --batch-size 16 -q \
  --out patches.safetensors > /dev/null
unadv-patch eval --model cnn.safetensors --data digits.jsonl --patches patches.safetensors \
  --corruptions gaussian_noise --severities 1 -q > patches-eval.jsonl
step "plant-backdoor: a one-cell bias-transfer grid -> $OUT/runs.jsonl"
plant-backdoor experiment --source "demo:digits?size=8" --source-split train --source-test-split test \
  --source-classes 0-4 --target "demo:digits?size=8" --target-split train --target-test-split test \
  --target-classes 5-9 --size 2 --color 1,1,1 --modes fixed --epochs-source 2 --epochs-target 2 -q > runs.jsonl
step "influence: an 8-model farm on a linear oracle -> $OUT/farm/, ranking -> $OUT/ranking.jsonl"
influence plan --recipe oracle-linear --num-models 8 \
  | influence train --recipe oracle-linear --out-dir farm | influence estimate > ranking.jsonl
step "immunize: a tiny random LDM -> $OUT/tiny-ldm/, one digit immunized and edited -> $OUT/edits.jsonl"
immunize tiny-model --out tiny-ldm --size 32 --unet img2img > /dev/null
head -1 digits.jsonl | immunize random - --model-dir tiny-ldm --size 32 --out-dir immunized -q \
  | immunize edit --model-dir tiny-ldm --steps 2 --out-dir edits -q > edits.jsonl
step "render-3db: a mug on a 3x3 heading x zoom grid (null engine) -> $OUT/renders.jsonl, $OUT/renders/"
cat > scene.yaml <<'YAML'
objects: [{id: mug, builtin: mug, label: 3}]
environments: [{id: white, solid: [1, 1, 1]}]
render_args: {engine: null, resolution: 32}
policy: {module: grid, samples_per_dim: 3}
controls:
  - {module: orientation, rotation_x: 0, rotation_y: 0, rotation_z: [-3, 3]}
  - {module: camera, view_point_x: 0, view_point_y: -1, view_point_z: 0.3, focal_length: 50, zoom_factor: [0.8, 1.2]}
YAML
render-3db run scene.yaml --model cnn.safetensors --images-dir renders --out renders.jsonl -q
step "report: one HTML page of every tool's figures -> $OUT/site/index.html"
report cnn.metrics.jsonl robustness.jsonl certified.jsonl curve.jsonl patches-eval.jsonl runs.jsonl ranking.jsonl \
  renders.jsonl --out site --title "quick demo"
