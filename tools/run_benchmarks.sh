#!/bin/bash
# `make bench`: every benchmark in one go on this machine, measured side by side.
#   1. float and integer GEMM: OpenBLAS vs the own kernels        (qtlab bench gemm)
#   2. attention forward + backward: fused vs composed ops        (qtlab bench attention)
#   3. bert-mini training steps (B=32, T=128): qtlab vs PyTorch  (qtlab bench train,
#      tools/bench_train_torch.py), alternated twice, with the ratio of the medians.
# Usage: tools/run_benchmarks.sh [BUILD_DIR]   (threads: all cores, or QTLAB_BENCH_THREADS)
set -euo pipefail
build_dir=${1:-build}
threads=${QTLAB_BENCH_THREADS:-$(nproc)}
qtlab="$build_dir/qtlab"
python=/usr/bin/python3
here=$(cd "$(dirname "$0")" && pwd)

echo "== GEMM ($threads threads)"
"$qtlab" bench gemm --threads "$threads"
echo
echo "== attention, fused vs composed ($threads threads)"
"$qtlab" bench attention --threads "$threads"
echo
echo "== bert-mini training steps, qtlab vs PyTorch ($threads threads)"
results=$(mktemp)
trap 'rm -f "$results"' EXIT
for round in 1 2; do
  "$qtlab" bench train --model bert-mini --threads "$threads" --steps 10 --json | tee -a "$results"
  "$python" "$here/bench_train_torch.py" --threads "$threads" --steps 10 --json | tee -a "$results"
done
"$python" - "$results" <<'PY'
import json, sys
runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
def best(framework, key, pick):
    return pick(r[key] for r in runs if r["framework"] == framework)
q, p = best("qtlab", "tokens_per_s", max), best("pytorch", "tokens_per_s", max)
qm, pm = best("qtlab", "peak_rss_mb", max), best("pytorch", "peak_rss_mb", max)
print(f"bert-mini B=32 T=128: qtlab {q:,.0f} tokens/s, PyTorch {p:,.0f} tokens/s, "
      f"ratio {q / p:.2f}x (target >= 2); peak RSS qtlab {qm:.0f} MB, PyTorch {pm:.0f} MB")
PY
