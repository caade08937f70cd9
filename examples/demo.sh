#!/usr/bin/env bash
# End-to-end demo on bundled data: every tool that exists runs here and says where its outputs are.
# Run through `make demo` (which sets up .venv first), or directly with the tools on PATH.
set -euo pipefail
OUT=${1:-demo-out}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT"
step() { printf '\n== %s\n' "$*" >&2; }

# `dataset export` prints the manifest with paths relative to the working directory and also
# writes DIR/manifest.jsonl with paths relative to DIR; the demo keeps the latter.
step "dataset: export the digits train/test splits to PNG files + manifests -> $OUT/digits-{train,test}/"
dataset export demo:digits --split train --out "$OUT/digits-train" > /dev/null
dataset export demo:digits --split test --out "$OUT/digits-test" > /dev/null
dataset info "$OUT/digits-test/manifest.jsonl" > "$OUT/digits-test-info.json"

step "dataset: a source/target class split of demo:shapes for transfer experiments -> $OUT/shapes-tasks/"
dataset export "demo:shapes?classes=10&per_class=40" --out "$OUT/shapes" > /dev/null
dataset split "$OUT/shapes/manifest.jsonl" --by classes --classes source:0-4 --classes target:5-9 --relabel \
  --out "$OUT/shapes-tasks" > /dev/null

step "dataset: real photographs shipped with scikit-image / scikit-learn -> $OUT/photos/"
dataset export demo:photos --out "$OUT/photos" > /dev/null

step "advtrain: a standard and an l2-robust (eps 1) tiny ResNet on digits -> $OUT/digits-{std,robust}.safetensors"
advtrain train --data "$OUT/digits-train/manifest.jsonl" --val "$OUT/digits-test/manifest.jsonl" \
  --epochs 4 --eps 0 --out "$OUT/digits-std.safetensors" > "$OUT/digits-std.metrics.jsonl"
advtrain train --data "$OUT/digits-train/manifest.jsonl" --val "$OUT/digits-test/manifest.jsonl" \
  --epochs 4 --eps 1 --out "$OUT/digits-robust.safetensors" > "$OUT/digits-robust.metrics.jsonl"

step "advtrain: clean and PGD accuracy of both -> $OUT/robustness.jsonl"
for name in std robust; do
  advtrain eval --model "$OUT/digits-$name.safetensors" --data "$OUT/digits-test/manifest.jsonl" \
    --constraint l2 --eps 0,0.5,1 --steps 20
done > "$OUT/robustness.jsonl"

step "advtrain: fixed-feature transfer of both to the shapes target task -> $OUT/transfer.jsonl"
dataset split "$OUT/shapes-tasks/target.jsonl" --fractions train=0.5,val=0.5 --out "$OUT/target" > /dev/null
for name in std robust; do
  advtrain transfer --source "$OUT/digits-$name.safetensors" --data "$OUT/target/train.jsonl" \
    --val "$OUT/target/val.jsonl" --mode fixed --epochs 30 --batch-size 16 --out "$OUT/shapes-from-$name.safetensors"
done > "$OUT/transfer.jsonl"
jq -c 'select(.kind == "summary") | {source_eps, mode, top1}' "$OUT/transfer.jsonl" >&2 2>/dev/null || true

step "certify: a tiny ViT for smoothing (full images, then column ablations) and certified predictions -> $OUT/certified.jsonl, $OUT/certify-summary.json"
certify fit --data "$OUT/digits-train/manifest.jsonl" --arch tiny_vit --ablation-size 8 \
  --pretrain-epochs 12 --epochs 10 --batch-size 32 --out "$OUT/digits-smoothed-vit.safetensors" > "$OUT/digits-smoothed-vit.metrics.jsonl"
head -100 "$OUT/digits-test/manifest.jsonl" | (cd "$OUT/digits-test" && certify run \
  --model ../digits-smoothed-vit.safetensors --patch-sizes 1,2 --summary ../certify-summary.json) > "$OUT/certified.jsonl"

step "ablate: missingness bias of a tiny CNN (black patches) and a tiny ViT (dropped tokens) -> $OUT/missingness-*.png"
dataset export "demo:digits?background=noisy" --split test --out "$OUT/noisy-test" > /dev/null
for arch in tiny_resnet tiny_vit; do
  advtrain train --data "demo:digits?background=noisy" --split train --arch "$arch" --optimizer adamw --lr 1e-3 \
    --weight-decay 0 --schedule cosine --epochs 12 --batch-size 32 --out "$OUT/noisy-$arch.safetensors" > /dev/null
done
head -200 "$OUT/noisy-test/manifest.jsonl" > "$OUT/noisy-test/first200.jsonl"  # paths resolve from its folder
ablate order "$OUT/noisy-test/first200.jsonl" --ref-model "$OUT/noisy-tiny_resnet.safetensors" \
  --order saliency-reverse --patch-size 4 --out "$OUT/least-salient.safetensors" > /dev/null
for order in random least-salient; do
  ORDERS=(--order random); [ "$order" = least-salient ] && ORDERS=(--orders "$OUT/least-salient.safetensors")
  for model in cnn-black:tiny_resnet:black vit-drop:tiny_vit:drop; do
    IFS=: read -r name arch fill <<< "$model"
    ablate curve "$OUT/noisy-test/first200.jsonl" --model "$OUT/noisy-$arch.safetensors" --fill "$fill" \
      --patch-size 4 --step 4 "${ORDERS[@]}" --summary "$OUT/curve-$name-$order.json" -q > "$OUT/curve-$name-$order.jsonl"
  done
  ablate plot "$OUT/curve-cnn-black-$order.json" "$OUT/curve-vit-drop-$order.json" --labels "CNN black,ViT drop" \
    --title "missingness bias, $order order (digits on noise)" --out "$OUT/missingness-$order.png"
done

step "plant-backdoor: does a backdoor planted in the source survive transfer? (a small grid, 2 seeds) -> $OUT/bias-transfer-*.json(l)"
plant-backdoor experiment --source "demo:digits?size=8" --source-split train --source-test-split test \
  --source-classes 0-4 --target "demo:digits?size=8" --target-split train --target-test-split test \
  --target-classes 5-9 --size 2 --color 1,1,1 --rates 0,0.1 --modes fixed,full,scratch --wd 5e-4,5e-2 \
  --seeds 0-1 --summary "$OUT/bias-transfer-summary.json" > "$OUT/bias-transfer-runs.jsonl"

step "influence: a small farm on demo:shapes (24 models), the ranking, and a counterfactual -> $OUT/influence-*.jsonl"
influence plan --recipe demo-shapes --num-models 24 --run-id shapes > "$OUT/influence-plan.jsonl"
influence train "$OUT/influence-plan.jsonl" --recipe demo-shapes --out-dir "$OUT/influence" > "$OUT/influence-done.jsonl"
influence estimate "$OUT/influence-done.jsonl" --out "$OUT/influence.safetensors" > "$OUT/influence-ranking.jsonl"
influence counterfactual --influence "$OUT/influence.safetensors" --ks 0,2 --runs 2 \
  | influence train --recipe demo-shapes --out-dir "$OUT/influence-cf" \
  | influence summarize > "$OUT/influence-counterfactual.jsonl"

step "unadv-patch: stickers the standard digits model recognises easily, against random ones, under corruptions -> $OUT/patches-eval.jsonl"
unadv-patch train --model "$OUT/digits-std.safetensors" --data "$OUT/digits-train/manifest.jsonl" --patch-size 8 \
  --steps 150 --batch-size 64 --out "$OUT/patches.safetensors" > "$OUT/patches-train.jsonl"
unadv-patch eval --model "$OUT/digits-std.safetensors" --data "$OUT/digits-test/manifest.jsonl" \
  --patches "$OUT/patches.safetensors" --corruptions gaussian_noise,contrast,fog --severities 1,2 --conflict \
  > "$OUT/patches-eval.jsonl"

step "unadv-patch: a cube texture (Mitsuba 3) a shapes classifier sees as a 'yellow cross', against grey and random -> $OUT/texture.png, $OUT/texture-eval.jsonl"
advtrain train --data demo:shapes --split train --epochs 10 --eps 0 --out "$OUT/shapes-std.safetensors" > /dev/null
TEXTURE_VIEWS=(--mesh builtin:cube --light-min 1 --light-max 1 --translate 0.1)
unadv-patch texture --model "$OUT/shapes-std.safetensors" --class-id 3 "${TEXTURE_VIEWS[@]}" --tex-size 32 \
  --steps 100 --lr 0.05 \
  --out "$OUT/texture.safetensors" > "$OUT/texture-train.jsonl"
unadv-patch eval-texture --model "$OUT/shapes-std.safetensors" --texture "$OUT/texture.safetensors" \
  "${TEXTURE_VIEWS[@]}" --views 64 --seed 1 --corruptions gaussian_noise,fog --severities 1,3 > "$OUT/texture-eval.jsonl"
unadv-patch export --texture "$OUT/texture.safetensors" --out "$OUT/texture.png" > /dev/null
jq -c 'select(.corruption == "clean") | {arm, acc}' "$OUT/texture-eval.jsonl" >&2 2>/dev/null || true

step "immunize: a tiny random LDM; 3 bundled photos immunized (encoder attack vs noise) at 64 px, edited, scored -> $OUT/immunize-scores.jsonl"
immunize tiny-model --out "$OUT/tiny-ldm" --size 64 --unet img2img > /dev/null
head -n 3 "$OUT/photos/manifest.jsonl" > "$OUT/photos/immunize-subset.jsonl"
for method in random encoder; do
  if [ "$method" = encoder ]; then steps=(--steps 50); else steps=(); fi
  immunize "$method" "$OUT/photos/immunize-subset.jsonl" --model-dir "$OUT/tiny-ldm" "${steps[@]}" -q \
    --out-dir "$OUT/immunized/$method" \
    | immunize edit --model-dir "$OUT/tiny-ldm" --steps 10 --out-dir "$OUT/edits/$method" -q \
    > "$OUT/immunize-edits-$method.jsonl"
  # ids repeat across methods, so each method's records are scored as one stream (paths relative to here)
  if immunize score --help > /dev/null 2>&1; then
    immunize score --metrics ssim,psnr,vifp,fsim < "$OUT/immunize-edits-$method.jsonl"
  fi
done > "$OUT/immunize-scores.jsonl"

step "render-3db: the cube rendered (Mitsuba 3) with its own grey look and with that texture, on a heading grid -> $OUT/renders.jsonl, $OUT/render-3db/"
cat > "$OUT/cube-texture.yaml" <<'YAML'
objects: [{id: cube, builtin: cube, label: 3, color: [0.5, 0.5, 0.5]}]   # label 3 = "yellow cross"
environments: [{id: noise, procedural: noise}]                          # like the texture's training backdrops
render_args: {engine: mitsuba, resolution: 32, samples: 8}
policy: {module: grid, samples_per_dim: 8}
controls:
  - module: texture
    source: [original, texture.safetensors]      # files resolve from this file's folder
  - module: orientation
    rotation_x: 0
    rotation_y: 0
    rotation_z: {range: [-3.14159, 3.14159], endpoint: false}
  - module: camera
    view_point_x: 0
    view_point_y: -1
    view_point_z: {values: [0, 0.5, 1]}
    zoom_factor: 1
    focal_length: 50
YAML
render-3db run "$OUT/cube-texture.yaml" --model "$OUT/shapes-std.safetensors" --images-dir "$OUT/renders" \
  --out "$OUT/renders.jsonl"
render-3db analyze "$OUT/renders.jsonl" --by texture.source --heatmap orientation.rotation_z,texture.source \
  --plots "$OUT/render-3db" > "$OUT/render-3db-analysis.jsonl"

step "report: one HTML page with every tool's figures -> $OUT/report/index.html"
REPORT=$(report "$OUT"/digits-*.metrics.jsonl "$OUT/robustness.jsonl" "$OUT/transfer.jsonl" "$OUT/certified.jsonl" \
  "$OUT"/curve-*.jsonl \
  "$OUT/patches-eval.jsonl" "$OUT/texture-eval.jsonl" "$OUT/immunize-scores.jsonl" "$OUT/renders.jsonl" \
  "$OUT/bias-transfer-runs.jsonl" "$OUT/influence-ranking.jsonl" "$OUT/influence-counterfactual.jsonl" \
  --out "$OUT/report" --title "confidently demo")

cat >&2 <<MSG

Outputs:
  $OUT/digits-train/, $OUT/digits-test/   PNG files in class subfolders + manifest.jsonl
  $OUT/digits-test-info.json              counts, classes and shapes
  $OUT/shapes-tasks/                      source.jsonl and target.jsonl: two different 5-class tasks
  $OUT/photos/manifest.jsonl              real photos (for immunize)
  $OUT/digits-{std,robust}.safetensors    standard and robust models (+ .metrics.jsonl per epoch, .config.yaml)
  $OUT/robustness.jsonl                   clean / PGD accuracy per eps of both
  $OUT/transfer.jsonl                     per-epoch metrics and the summary of both transfers
  $OUT/certified.jsonl                    per-image certificates of the smoothed tiny ViT
  $OUT/certify-summary.json               clean, base and certified accuracy per patch size
  $OUT/missingness-{random,least-salient}.png  bias curves: CNN with black patches vs ViT dropping tokens
  $OUT/curve-*.json(l)                    per-image curves and their summaries
  $OUT/bias-transfer-runs.jsonl           one record per (source, mode, wd, seed) run of the bias-transfer grid
  $OUT/bias-transfer-summary.json         target ASR and clean accuracy, mean ± std per setting
  $OUT/influence-ranking.jsonl            source classes ranked by their influence on the shapes target task
  $OUT/influence-counterfactual.jsonl     target accuracy without the top / bottom / random classes
  $OUT/patches.safetensors, patches-eval.jsonl  unadversarial patches per class and their accuracy per corruption
  $OUT/texture.{safetensors,png}, texture-eval.jsonl  an unadversarial cube texture and its accuracy vs grey/random
  $OUT/renders.jsonl, renders/            render-3db: one record (and PNG) per render of the cube, grey or textured
  $OUT/render-3db/heatmap_*.png           accuracy over heading × texture (render-3db analyze --plots)
  $OUT/immunized/, edits/, immunize-edits-*.jsonl  immunized photos (tiny random LDM), clean and immunized edits
  $OUT/immunize-scores.jsonl              similarity of the edits per image and per method (lower = protected)

Open the report: $REPORT
MSG
