#!/usr/bin/env bash
# One short GPU session: the training loop on CUDA, then the train-step benchmark for ViT-B/16
# at m = 6 in bf16 (paper per-GPU batch: 43 captions x 6 = 258 images; and twice that).
# Usage on a GPU machine (results under $OUT, default ./gpu-out):
#   bash benchmarks/gpu_check.sh
set -uo pipefail
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)" | tee -a "$OUT/gpu.txt"

echo "== training loop on CUDA (tiny preset, bf16 autocast, fused AdamW, checkpoint + resume)"
timeout 180 $PY -m stablerep train --out /tmp/gpu-run --set train.steps=30 --set train.device=cuda \
  --set train.log_every=10 2>&1 | tail -3 | tee "$OUT/loop.txt"
timeout 120 $PY -m stablerep train --out /tmp/gpu-run --set train.steps=40 --set train.device=cuda \
  --set train.log_every=10 2>&1 | tail -1 | tee -a "$OUT/loop.txt"

echo "== ViT-B/16, m=6, bf16"
timeout 300 $PY benchmarks/train_step.py --backbone vit_base_patch16_224 --captions 43 --m 6 \
  --compile --steps 10 --repeats 3 --json "$OUT/vitb16_258.json" 2>&1 | tee "$OUT/vitb16_258.txt"
timeout 200 $PY benchmarks/train_step.py --backbone vit_base_patch16_224 --captions 86 --m 6 \
  --steps 10 --repeats 3 --json "$OUT/vitb16_516.json" 2>&1 | tee "$OUT/vitb16_516.txt"
