#!/bin/bash
# The main job (`make demo`, after deps, data and build): the paper's Table 2 experiment, small.
#
#   1. pretrain bert-mini (4 layers x 256, 4 heads) on the Gutenberg + Brown text three times,
#      with the same seed, data order and schedule, changing only the attention (the schedule:
#      lr 1e-3, linear warm-up over the first 15% of the steps, then linear decay; post-LN BERT
#      needs the longer warm-up at this length: with the preset's 5%, i.e. 35 of 700 steps, the
#      vanilla and gated runs stalled at the unigram plateau, validation perplexity ~1,000, while
#      15% reached ~640 by step 350, docs/results.md):
#        vanilla   softmax                                                   (method.md §1.1)
#        clipped   clipped softmax, gamma = -0.025, zeta = 1                  (§1.2, the BERT row)
#        gated     gated attention, per-head MLP d_head -> d_head/4 -> 1      (§2, the BERT script)
#   2. quantize each to W8A8 (BERT defaults of §4.4: min-max weights, running min-max activations,
#      16 calibration batches) and run the integer-only model built from the same ranges
#      (`--integer`, docs/integer-reference.md) -> RUN_DIR/quantize-w8a8.json
#   3. `qtlab report` analyses each (outlier metrics of §5), prints the Table 2 columns (FP
#      perplexity, max inf norm, avg kurtosis, W8A8 perplexity) and writes DEMO_DIR/report/.
#   4. beside them, the committed rows of the long runs (`qtlab results --rows`, from
#      docs/results/table2/*.jsonl: run, seed, step, the same columns and the lowest safe
#      activation bit width), labelled as such: at 600 steps the three demo rows are nearly the
#      same, and the long runs are where the paper's effect shows (or does not) at this scale.
#
# A run that already finished is reused, one that was interrupted is resumed from its checkpoint
# (so a second `make demo` only redoes what is missing); a run whose stored config differs from
# the one asked for stops with an error naming the difference (delete its directory to restart).
#
# Environment (defaults in brackets):
#   QTLAB         the qtlab binary                         [build/qtlab]
#   DEMO_DIR      where the runs and the report go          [runs/demo]
#   DEMO_STEPS    optimizer steps per run                   [600: 2.5 M tokens per run; the whole
#                 demo, three runs + quantize + report, takes 20-30 min on 2 cores]
#   DEMO_THREADS  OpenMP threads                            [all cores]
#   DEMO_FLAGS    extra `qtlab pretrain` flags for all three runs (e.g. "--lr 2e-3")
#   DEMO_CALIBRATION_BATCHES                               [16]
#   DEMO_COMMITTED_RESULTS  the long runs' results files   [docs/results/table2 beside this script]
set -euo pipefail
qtlab=${QTLAB:-build/qtlab}
demo_dir=${DEMO_DIR:-runs/demo}
steps=${DEMO_STEPS:-600}
threads=${DEMO_THREADS:-$(nproc)}
extra=${DEMO_FLAGS:-}
calibration_batches=${DEMO_CALIBRATION_BATCHES:-16}
committed=${DEMO_COMMITTED_RESULTS:-$(dirname "$0")/../docs/results/table2}

[ -x "$qtlab" ] || { echo "demo: $qtlab not found or not executable (run make cli)" >&2; exit 1; }
read -ra extra_flags <<< "$extra"

declare -A attention=(
  [vanilla]=""
  [clipped]="--attn clipped --gamma -0.025"
  [gated]="--gate mlp"
)
variants=(vanilla clipped gated)
start=$(date +%s)

# One run directory per configuration: the default one (600 steps, no DEMO_FLAGS) in
# DEMO_DIR/<variant>, any other in DEMO_DIR/<variant>-<steps>steps[-<hash of DEMO_FLAGS>], so that
# `make demo DEMO_STEPS=2000` after a finished demo trains new runs instead of refusing to resume
# the old ones with a different step count. The report goes beside them (report<suffix>).
suffix=""
if [ "$steps" != 600 ] || [ -n "$extra" ]; then
  suffix="-${steps}steps"
  [ -z "$extra" ] || suffix="$suffix-$(printf '%s' "$extra" | sha256sum | cut -c1-8)"
fi

for variant in "${variants[@]}"; do
  run_dir="$demo_dir/$variant$suffix"
  read -ra attention_flags <<< "${attention[$variant]}"
  flags=(--model bert-mini "${attention_flags[@]}" --steps "$steps" --threads "$threads"
         --run-dir "$run_dir" --set train.warmup_fraction=0.15
         --set "train.eval_every=$((steps / 4 > 0 ? steps / 4 : 1))" "${extra_flags[@]}")
  echo "== $variant: qtlab pretrain ${flags[*]}"
  if [ -f "$run_dir/checkpoint.safetensors" ]; then
    "$qtlab" pretrain "${flags[@]}" --resume
  else
    rm -rf "$run_dir"
    "$qtlab" pretrain "${flags[@]}"
  fi
  # quantize-w8a8.json is redone only when it is missing, older than the model, or made with
  # other settings (a second `make demo` redoes only what is missing).
  result="$run_dir/quantize-w8a8.json"
  if [ -f "$result" ] && [ "$result" -nt "$run_dir/model.safetensors" ] &&
     grep -q '"integer"' "$result" &&
     grep -Eq "\"calibration_batches\": *$calibration_batches," "$result"; then
    echo "== $variant: W8A8 result up to date ($result), not recomputed"
  else
    echo "== $variant: qtlab quantize (W8A8: calibration, then FP, simulated W8A8 and integer-only" \
      "on the whole validation split; a few minutes)"
    "$qtlab" quantize --checkpoint "$run_dir/model.safetensors" --wbits 8 --abits 8 --integer \
      --calib-batches "$calibration_batches" --threads "$threads"
    rm -f "$run_dir/analysis.json"  # the report analyses the model it was just given
  fi
done

echo "== report"
"$qtlab" report --threads "$threads" --out "$demo_dir/report$suffix" \
  "$demo_dir/vanilla$suffix" "$demo_dir/clipped$suffix" "$demo_dir/gated$suffix"
if compgen -G "$committed/*.jsonl" > /dev/null; then
  echo "== beside the demo's rows above: the committed long runs (not this demo's)"
  "$qtlab" results --rows "$committed"
else
  echo "== no committed long-run results in $committed"
fi
echo "demo: done in $(( ($(date +%s) - start) / 60 )) min; open $demo_dir/report$suffix/report.md"
