#!/usr/bin/env bash
# Every GPU measurement of docs/measurements.md ("Real scale") in one call (issue 18). Run from the repository root on a machine with
# an NVIDIA GPU of 80 GB or more:   OUT=runs/gpu-bench bash scripts/gpu_bench.sh
# Writes gpu.txt, one log and one JSON per step and table.md to $OUT; each step has its own time limit, so a slow
# step loses only itself. Estimated total (not yet run): ~6-8 minutes on an H100/H200, the naive 7B sweeps dominating;
# one sample per run (the figures are per sample). To split it over several calls, name the steps:
#   STEPS="tests llava8 llava24" bash scripts/gpu_bench.sh;  STEPS="qwen8 qwen24 auto32" bash scripts/gpu_bench.sh
set -uo pipefail
OUT=${OUT:-runs/gpu-bench}
PYTHON=${PYTHON:-python}
STEP=${STEP_TIMEOUT:-240}
STEPS=${STEPS:-tests llava8 llava24 qwen8 qwen24 auto32}
want() { [[ " $STEPS " == *" $1 "* ]]; }
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
"$PYTHON" -c "import torch, transformers, nnsight; print('torch', torch.__version__, 'transformers', \
transformers.__version__, 'nnsight', nnsight.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/gpu.txt"

bench() {  # name, then mapflow bench arguments
    local name=$1; shift
    timeout "$STEP" "$PYTHON" -c "from mapflow.cli import main; main()" bench --device cuda --dtype bfloat16 \
        --max-samples 1 --json "$OUT/$name.json" "$@" 2>&1 | tee "$OUT/$name.log"
}

# 1. half-precision exactness and the out-of-memory retry on the GPU's kernels (tiny models; ~1 minute)
want tests && timeout "$STEP" "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_half_precision.py \
    tests/test_memory.py 2>&1 | tail -5 | tee "$OUT/tests.log"
# 2. the paper sweep (11 flows x every layer, k = 9) on the 7B shapes, naive vs fast, wall time per sample,
#    peak GPU memory, max |delta p|
want llava8 && bench llava-next-video-7b-8f --shape llava-next-video-7b --frames 8
want llava24 && bench llava-next-video-7b-24f --shape llava-next-video-7b --frames 24
want qwen8 && bench qwen2.5-vl-7b-8f --shape qwen2.5-vl-7b --frames 8
want qwen24 && bench qwen2.5-vl-7b-24f --shape qwen2.5-vl-7b --frames 24 --skip-naive
# 3. the device_map path (one GPU: accelerate places everything on it) and 32 frames, fast plan only
want auto32 && bench llava-next-video-7b-32f-auto --shape llava-next-video-7b --frames 32 --device-map auto --skip-naive

shopt -s nullglob
"$PYTHON" scripts/bench_table.py "$OUT"/*.json | tee "$OUT/table.md"
