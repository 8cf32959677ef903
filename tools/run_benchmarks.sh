#!/bin/bash
# `make bench`: every benchmark in one go on this machine, measured side by side.
#   1. float and integer GEMM: OpenBLAS vs the own kernels        (qtlab bench gemm)
#   2. attention forward + backward: fused vs composed ops        (qtlab bench attention)
#   3. bert-mini training steps (B=32, T=128): qtlab vs PyTorch  (qtlab bench train,
#      tools/bench_train_torch.py), alternated twice, a table and the ratio with its verdict
#   4. inference: FP32 vs the integer-only model                  (qtlab bench infer)
# Readable tables throughout; each benchmark's --json gives its machine-readable form.
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
  # JSON lines go to the results file; the readable line per measurement is printed below.
  "$qtlab" bench train --model bert-mini --threads "$threads" --steps 10 --json >> "$results"
  "$python" "$here/bench_train_torch.py" --threads "$threads" --steps 10 --json >> "$results"
done
"$python" - "$results" <<'PY'
import json, sys
runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
print(f"{'round':<7}{'framework':<11}{'tokens/s':>10}{'peak RSS MB':>13}")
for i, r in enumerate(runs):
    print(f"{i // 2 + 1:<7}{r['framework']:<11}{r['tokens_per_s']:>10,.0f}{r['peak_rss_mb']:>13.0f}")
# The baseline must run as its users would have it: the OpenMP OpenBLAS (what `make deps`
# installs and qtlab links) on the requested threads. Anything else is named before the ratio.
for r in runs:
    if r["framework"] != "pytorch":
        continue
    if r.get("blas") != "openblas-openmp":
        print(f"WARNING: PyTorch ran on BLAS '{r.get('blas')}' ({', '.join(r.get('blas_paths', []))}), "
              "not the OpenMP OpenBLAS: the ratio below is against a differently configured baseline")
    if r.get("torch_threads") != r.get("threads"):
        print(f"WARNING: PyTorch used {r.get('torch_threads')} threads, not the {r.get('threads')} asked for")
def best(framework, key, pick):
    return pick(r[key] for r in runs if r["framework"] == framework)
q, p = best("qtlab", "tokens_per_s", max), best("pytorch", "tokens_per_s", max)
qm, pm = best("qtlab", "peak_rss_mb", max), best("pytorch", "peak_rss_mb", max)
target = 2.5
verdict = "meets" if q / p >= target else "BELOW"
print(f"bert-mini B=32 T=128, best of the rounds: qtlab {q:,.0f} tokens/s, PyTorch {p:,.0f} "
      f"tokens/s: {q / p:.2f}x, {verdict} the target of {target}x (issue 14); "
      f"peak RSS qtlab {qm:.0f} MB, PyTorch {pm:.0f} MB ({qm / pm:.2f}x)")
PY
echo
echo "== inference, FP32 vs integer-only ($threads threads)"
"$qtlab" bench infer --threads "$threads"
