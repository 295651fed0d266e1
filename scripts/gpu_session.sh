#!/usr/bin/env bash
# What to run when a session is lent a GPU machine (H100 / H200), in phases that each fit one device
# call (10 minutes). The machine's own python3 has torch, triton, pytest and hypothesis; stattn runs
# from this checkout through PYTHONPATH. Results go to $OUT (the device tool brings them back):
# copy the CSVs into benchmarks/results/ and commit them.
#
#   bash scripts/gpu_session.sh tests      # GPU test tiers: kernels, fused block (~5 min)
#   bash scripts/gpu_session.sh targets    # the performance targets (docs/performance.md, GPU)
#   bash scripts/gpu_session.sh sweep      # the attention sweep, fp32 and bf16, non-compiled providers
#   bash scripts/gpu_session.sh head       # the DSTA head, every provider
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
OUT="${OUT:-$PWD/out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
RES=(--record --results-dir "$OUT")

case "${1:-}" in
  tests)
    "$PY" -m stattn.info | tee "$OUT/info.txt"
    "$PY" -m pytest -m gpu -q tests/ops/test_triton_gpu.py tests/nn/test_fused_block_gpu.py 2>&1 | tee "$OUT/gpu_tests.log"
    ;;
  targets)
    "$PY" benchmarks/bench_attention.py --device cuda --batch 256,4096 --frames 5 --heads-dims 8x4 \
      --modes fwd,fwdbwd --dtypes float32,bfloat16 "${RES[@]}" 2>&1 | tee "$OUT/targets_attention.log"
    "$PY" benchmarks/bench_head.py --device cuda --batch 1,256 --frames 5 --modes fwd \
      --dtypes float32,bfloat16 "${RES[@]}" 2>&1 | tee "$OUT/targets_head.log"
    ;;
  sweep)
    P=stattn-triton,stattn-reference,eager-official,sdpa,sdpa-flash,sdpa-efficient,sdpa-math,sdpa-cudnn,sdpa-global,xformers
    for dt in float32 bfloat16; do
      "$PY" benchmarks/bench_attention.py --device cuda --dtypes "$dt" --providers "$P" --timer do_bench \
        "${RES[@]}" 2>&1 | tee -a "$OUT/sweep.log"
    done
    ;;
  head)
    "$PY" benchmarks/bench_head.py --device cuda "${RES[@]}" 2>&1 | tee "$OUT/head.log"
    ;;
  *)
    sed -n '2,9p' "$0"
    exit 2
    ;;
esac
"$PY" benchmarks/plot.py --results-dir "$OUT" --out "$OUT/plots" >/dev/null 2>&1 || true
