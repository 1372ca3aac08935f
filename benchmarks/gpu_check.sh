#!/usr/bin/env bash
# Every GPU figure of benchmarks/results/ in one run: about 7 minutes on one H100/H200, 9.5 at
# most (each benchmark is capped: synthesis 320 s, training step 140 s, loader 110 s; each writes
# its JSON as it goes, so a capped one still leaves what it measured).
#
#   1. synthesis   SD v1.5 architecture (random weights), DDIM 50 steps, guidance 2, 512 px, fp16:
#                  batch sweep (16, 32, 48 at 10 steps), the plain `pipe(prompt=[...],
#                  generator=[...])` call at the best batch, ours uncompiled and compiled, pixel
#                  differences, the shard worker end to end, MFU of the whole image, a profile.
#   2. train_step  ViT-B/16, 43 captions x m = 6 (258 images), 224 px, from uint8 loader batches
#                  through the GPU augmentation: fp32 + TF32 + default AdamW against bf16 + fused
#                  AdamW, with and without torch.compile; MFU; a profile.
#   3. loader      shards vs the paper's code on JPEG and PNG folders vs decode + augment from memory, batches
#                  finished on the GPU, 2 and 6 workers, 800 captions; per-caption CPU profile.
#
# Where the GPU image lacks packages (pydantic, diffusers, open_clip...), bring them as wheels:
#   bash benchmarks/gpu_check.sh --wheels      # here, before the GPU call: downloads into .whl/
# then on the GPU machine, from the repository root (results and profiles land in $OUT):
#   bash benchmarks/gpu_check.sh
# and copy $OUT/*.json into benchmarks/results/ (the files are named <benchmark>-<gpu>.json).
set -uo pipefail
WHEELS=(pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
        typing-extensions==4.16.0 diffusers==0.42.1 open-clip-torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4)
PY=${PY:-python3}

if [[ ${1:-} == --wheels ]]; then
  rm -rf .whl && mkdir -p .whl
  exec "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}"
fi

OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed" | tee -a "$LOG"; exit 1; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export STABLEREP_CACHE=/tmp/stablerep-cache TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-cache

run() {  # run NAME SECONDS COMMAND...: one benchmark, capped, its output in the log
  local name=$1 limit=$2; shift 2
  echo "== $name (cap ${limit}s): $*" | tee -a "$LOG"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | grep --line-buffered -v -E "Loading (pipeline components|weights)|Writing model shards" \
    | tee -a "$LOG"
  echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s" | tee -a "$LOG"
}

{
  date -u +%FT%TZ
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  nproc
  "$PY" -c "import torch, torchvision, diffusers, transformers, timm, pydantic, pyarrow, open_clip
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'torchvision', torchvision.__version__,
      'diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'timm', timm.__version__,
      'pydantic', pydantic.__version__, 'pyarrow', pyarrow.__version__, 'open_clip', open_clip.__version__)"
} 2>&1 | tee "$LOG"

run synthesis 320 "$PY" benchmarks/synthesis.py --arch sd15 --k 10 --steps 50 --guidance 2 --resolution 512 \
  --sweep 16,32,48 --sweep-steps 10 --batches 2 --compile --profile "$OUT/synthesis_profile.txt" \
  --model-cache /tmp/sd15 --out-dir "$OUT"
run train_step 140 "$PY" benchmarks/train_step.py --backbone vit_base_patch16_224 --captions 43 --m 6 \
  --compile --warmup 3 --steps 10 --repeats 3 --profile "$OUT/train_step_profile.txt" --out-dir "$OUT"
run loader 110 "$PY" benchmarks/loader.py --device cuda --captions 800 --m 6 --batch 16 --workers 2,6 \
  --batches 15 --repeats 3 --profile "$OUT/loader_profile.txt" --out-dir "$OUT"
ls -l "$OUT" | tee -a "$LOG"
