#!/usr/bin/env bash
# Real-scale readiness on a GPU machine, in one short run:
#   bash tools/device_check.sh [NUM_GPUS]      (default: every visible CUDA device)
#   bash tools/device_check.sh --cpu           (rehearsal on the CPU: 1 process, gloo, 2 iterations)
# 1. renders a small mini world at 800x450 (4 scenes x 8 key frames; skipped if present),
# 2. trains configs/nuscenes/device_check.py (the real-scale model: resnet50, 50x50 BEV, T=4,
#    gradient checkpointing, bf16 AmpOptimWrapper) for 20 iterations with torchrun DDP,
# 3. tests the checkpoint on 4 val frames with plain greedy decoding and with the lossless variant,
# 4. writes work_dirs/device_check/report.json (tools/device_report.py): iteration time, peak GPU
#    memory, losses finite, decode tokens/s, lossless answers identical to greedy.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=work_dirs/device_check
CFG=configs/nuscenes/device_check.py
ITERS=20
if [ "${1:-}" = "--cpu" ]; then
  CFG=configs/nuscenes/device_check_cpu.py
  ITERS=2
  NGPU=1
  LAUNCH_DEVICE=cpu
else
  NGPU=${1:-$($PY -c "import torch; print(torch.cuda.device_count())")}
  LAUNCH_DEVICE=cuda
  if [ "$NGPU" -lt 1 ]; then
    echo "device_check: no CUDA device visible (torch.cuda.device_count() = 0). Fix: run on a GPU machine," \
         "or rehearse on the CPU with: bash tools/device_check.sh --cpu" >&2
    exit 2
  fi
fi
mkdir -p "$OUT"
if [ ! -f "$OUT/world/infos/bevlm_infos_val.pkl" ]; then
  $PY tools/create_data.py world --out "$OUT/world" --scenes 4 --frames 8 --image-size 800 450 --seed 0
fi
rm -rf "$OUT/train" "$OUT/test" "$OUT/test_lossless"
$PY -m torch.distributed.run --nproc_per_node="$NGPU" --master_port="${PORT:-29511}" \
    tools/train.py "$CFG" --launcher pytorch --work-dir "$OUT/train" 2>&1 | tee "$OUT/train.log"
$PY tools/test.py "$CFG" "$OUT/train/iter_$ITERS.pth" --work-dir "$OUT/train" --out-dir "$OUT/test" \
    2>&1 | tee "$OUT/test.log"
$PY tools/test.py "$CFG" "$OUT/train/iter_$ITERS.pth" --work-dir "$OUT/train" --out-dir "$OUT/test_lossless" \
    --variant lossless 2>&1 | tee "$OUT/test_lossless.log"
$PY tools/device_report.py --out-dir "$OUT" --num-procs "$NGPU" --device "$LAUNCH_DEVICE" --config "$CFG"
