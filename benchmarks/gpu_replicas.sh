#!/bin/bash
# The GPU check of many-replica training, as one prepared script for a machine with an
# accelerator (one device lease: ~8 minutes of GPU time at the Charades shapes).
#
#   OUT=DIR bash benchmarks/gpu_replicas.sh
#
# 1. speed.py --num_seeds=1,4,16 --parts=train: summed training examples/s and the
#    step-time ratios of K = 1, 4, 16 replicas measured in the same run (the target:
#    K = 16 >= 10x the K = 1 throughput). The two buckets that hold ~80% of Charades-STA
#    batches only (--min_share=0.2): a GPU compiles the train step for ~40 s per bucket.
# 2. step_breakdown.py: where one K = 1 step's time goes (forward, backward, the in-jit
#    Hungarian matching, optimizer, launch latency, host syncs).
# Both JSON files land in $OUT (default benchmarks/results) with the device's name.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
tag=$(python -c "import jax; print(jax.devices()[0].device_kind.replace(' ', '_').lower())")
python benchmarks/step_breakdown.py --output="$OUT/${tag}_step_breakdown.json" 2>&1 \
    | tee "$OUT/${tag}_gpu_replicas.log"
python benchmarks/speed.py --parts=train --num_seeds=1,4,16 --min_share=0.2 \
    --output="$OUT/${tag}_replicas_k1_4_16.json" 2>&1 | tee -a "$OUT/${tag}_gpu_replicas.log"
