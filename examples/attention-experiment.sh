#!/usr/bin/env bash
# attention-experiment: the seventh weapon, measured. A vanilla tanh RNN on
# the adding problem at T = 10, 50 and 200, with and without gradient
# clipping, against a small pre-LayerNorm Transformer, every run made with
# the arsenal binary (examples/adding-rnn.cfg, examples/adding-transformer.cfg).
# Writes docs/attention-results.md: final test MSE (always answering 1.0
# scores 0.167), and the gradient norm per time step from the runs'
# checkpoints, with the date, commit and seeds.
#
#   examples/attention-experiment.sh [ARSENAL_BINARY]
#
# Environment: SEEDS ("1"), LENGTHS ("10 50 200"), RNN_STEPS (2000),
# TF_STEPS (600), CLIP (1.0), OUT (docs/attention-results.md), MPIRUN
# (e.g. "mpirun -np 2": run every training data-parallel). About 2 minutes
# of one core per seed; docs/attention-results.md was made with SEEDS="1 2 3".
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-${ARSENAL_BINARY:-}}
if [ -z "$bin" ]; then
    for candidate in "$root/build/arsenal" "$(command -v arsenal || true)"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ]; then bin=$candidate; break; fi
    done
fi
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "attention-experiment: no arsenal binary (pass its path, or build into $root/build)" >&2
    exit 2
fi
seeds=${SEEDS:-1}
lengths=${LENGTHS:-"10 50 200"}
rnn_steps=${RNN_STEPS:-2000}
tf_steps=${TF_STEPS:-600}
clip=${CLIP:-1.0}
out=${OUT:-$root/docs/attention-results.md}
launcher=${MPIRUN:-}
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The last value of "key" in the metrics file's epoch records (the final
# evaluation comes last).
last_metric() {
    grep '"kind":"epoch"' "$1" | tail -n 1 | sed -n "s/.*\"$2\":\([^,}]*\).*/\1/p"
}

# The per-step gradient norms a layer recorded on probe steps, from the
# newest checkpoint in $1: row $3 ("first" or "last") of the [probes, time]
# dataset /history/time_grad_norm/<layer $2>, comma-separated; empty when
# this build's checkpoints do not hold it.
time_norms() {
    local file=$1/latest.h5 dataset=/history/time_grad_norm/$2
    [ -e "$file" ] || return 0
    h5dump -d "$dataset" -y -w 0 -o "$work/norms.txt" "$file" > /dev/null 2>&1 || return 0
    local dims rows cols
    dims=$(h5dump -H -d "$dataset" "$file" | sed -n 's/.*DATASPACE  SIMPLE { ( \([0-9]*\), \([0-9]*\) ).*/\1 \2/p')
    read -r rows cols <<< "$dims"
    [ -n "$rows" ] && [ "$rows" -gt 0 ] || return 0
    local row=0
    [ "$3" = last ] && row=$((rows - 1))
    tr -d ' \n' < "$work/norms.txt" | tr ',' '\n' | sed -n "$((row * cols + 1)),$(((row + 1) * cols))p" | paste -sd,
}

# "g_0 g_T/4 g_T/2 g_3T/4 g_T-1 | g_0 / g_T-1" from a comma-separated row.
norm_profile() {
    awk -F, -v T="$2" '{
        n = split("0 " int(T/4) " " int(T/2) " " int(3*T/4) " " (T-1), at, " ");
        line = "";
        for (i = 1; i <= n; i++) line = line sprintf("%s%.2e", i > 1 ? " | " : "", $(at[i] + 1));
        ratio = ($T > 0) ? $1 / $T : 0;
        printf "%s | %.1e", line, ratio;
    }' <<< "$1"
}

# run NAME CFG LAYER_SECTION T SEED CLIP STEPS -> $work/NAME-T-SEED-CLIP/{metrics.jsonl,ckpt}
run() {
    local name=$1 cfg=$2 section=$3 T=$4 seed=$5 clip_norm=$6 steps=$7
    local dir=$work/$name-$T-$seed-$clip_norm
    mkdir -p "$dir"
    # shellcheck disable=SC2086
    $launcher "$bin" train "$root/examples/$cfg" --set "run.seq_len=$T" --set "$section.time=$T" \
        --set "run.seed=$seed" --set "run.clip_norm=$clip_norm" --set "run.max_steps=$steps" \
        --set run.probe_every=50 --metrics "$dir/metrics.jsonl" --ckpt-dir "$dir/ckpt" --quiet \
        > "$dir/log.txt" 2>&1 || { echo "run failed: $name T=$T seed=$seed clip=$clip_norm" >&2; cat "$dir/log.txt" >&2; exit 1; }
    printf '  %-12s T=%-4s seed %-3s clip %-4s test MSE %s (%ss)\n' "$name" "$T" "$seed" "$clip_norm" \
        "$(last_metric "$dir/metrics.jsonl" test_loss)" "$(last_metric "$dir/metrics.jsonl" seconds)" >&2
}

echo "attention-experiment: $bin, seeds $seeds, T in $lengths" >&2
for T in $lengths; do
    for seed in $seeds; do
        run rnn adding-rnn.cfg rnn "$T" "$seed" 0 "$rnn_steps"
        run rnn adding-rnn.cfg rnn "$T" "$seed" "$clip" "$rnn_steps"
        run transformer adding-transformer.cfg seq_dense "$T" "$seed" "$clip" "$tf_steps"
    done
done

# mean and the values over the seeds, "0.123 (0.12, 0.127)"
mse_cell() {
    local name=$1 T=$2 clip_norm=$3 values="" seed
    for seed in $seeds; do
        values="$values $(last_metric "$work/$name-$T-$seed-$clip_norm/metrics.jsonl" test_loss)"
    done
    awk -v v="$values" 'BEGIN {
        n = split(v, a, " "); s = 0; for (i = 1; i <= n; i++) s += a[i];
        printf "%.3g", s / n;
        if (n > 1) { printf " ("; for (i = 1; i <= n; i++) printf "%s%.3g", (i > 1 ? ", " : ""), a[i]; printf ")" }
    }'
}

commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ "$commit" != unknown ] && [ -n "$(git -C "$root" status --porcelain -- src include 2>/dev/null)" ]; then
    commit="$commit (with uncommitted changes to src/ or include/)"
fi
first_seed=${seeds%% *}
{
    echo "# Attention against recurrence on the adding problem: results"
    echo
    echo "Generated by \`examples/attention-experiment.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'),"
    echo "commit $commit, \`$("$bin" --version 2>&1 | head -n 1)\`, $(nproc) cores;"
    echo "seeds: $seeds. Do not edit: re-run the script. What the layers compute:"
    echo "[attention.md](attention.md)."
    echo
    echo "The adding problem (Hochreiter & Schmidhuber 1997): two marked values among T"
    echo "steps, one in each half; the target is their sum. Always answering 1.0 scores"
    echo "MSE 0.167. Models (the example run files, \`seq_len\` and the first layer's"
    echo "\`time\` set per row):"
    echo
    echo "* RNN: \`examples/adding-rnn.cfg\`, 64 tanh units, last-step readout, Adam lr 1e-3,"
    echo "  batch 32, $rnn_steps steps, gradient clipping off (\`clip_norm = 0\`) or at norm $clip;"
    echo "* Transformer: \`examples/adding-transformer.cfg\`, row embedding to 32 features,"
    echo "  learned positions, one pre-LN block (4 heads, MLP 64), mean pooling, Adam lr 3e-3,"
    echo "  batch 32, $tf_steps steps, clipping at $clip."
    echo
    echo "## Final test MSE (1000 test sequences; mean over seeds, per seed in parentheses)"
    echo
    echo "| T | RNN, no clipping | RNN, clip_norm $clip | Transformer |"
    echo "| ---: | ---: | ---: | ---: |"
    for T in $lengths; do
        echo "| $T | $(mse_cell rnn "$T" 0) | $(mse_cell rnn "$T" "$clip") | $(mse_cell transformer "$T" "$clip") |"
    done
    echo
    echo "## Gradient norm against time step (seed $first_seed)"
    echo
    echo "RNN: ||dL/dh_t||, the gradient that reaches hidden state t through time. Transformer:"
    echo "||dL/de_t|| at the output of the row embedding (what reaches input step t). Over"
    echo "the batch of a probe step, at the first probe (step 0, the initialized network)"
    echo "and the last. The last column is the ratio between the first and the last step:"
    echo "how much of the gradient survives the distance T - 1."
    echo
    have_norms=0
    rows=""
    for T in $lengths; do
        for spec in "rnn:0:000_rnn:RNN, no clipping" "rnn:$clip:000_rnn:RNN, clip $clip" \
                    "transformer:$clip:000_seq_dense:Transformer"; do
            IFS=: read -r name clip_norm layer label <<< "$spec"
            dir=$work/$name-$T-$first_seed-$clip_norm/ckpt
            for when in first last; do
                norms=$(time_norms "$dir" "$layer" "$when")
                [ -n "$norms" ] || continue
                have_norms=1
                rows="$rows| $T | $label | $when | $(norm_profile "$norms" "$T") |"$'\n'
            done
        done
    done
    if [ "$have_norms" = 1 ]; then
        echo "| T | model | probe | t = 0 | T/4 | T/2 | 3T/4 | T-1 | g_0 / g_(T-1) |"
        echo "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
        printf '%s' "$rows"
    else
        echo "Not available: the checkpoints of this build do not hold the per-step norms"
        echo "(\`/history/time_grad_norm/<layer>\`, [probes, time]); the layers record them"
        echo "(\`layer->time_grad_norm\`) on every probe step."
    fi
} > "$out"
echo "attention-experiment: wrote $out" >&2
