#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/, -DARSENAL_FUZZ=ON with clang,
# ASan + UBSan) and runs each for N seconds.
#
#   scripts/fuzz.sh [-t SECONDS] [TARGET...]    targets: config idx ckpt csv npy h5data input (default: all)
#   scripts/fuzz.sh --regen-ckpt-seeds          rewrite tests/fuzz/corpus/ckpt/*.h5
#   scripts/fuzz.sh --regen-data-seeds          rewrite tests/fuzz/corpus/{h5data,npy,csv}/*
#
#   FUZZ_SECONDS   seconds per target (default 60; -t wins)
#   BUILD_DIR      build directory (default build-fuzz)
#   FUZZ_WORK      where the growing corpora and crash artifacts live
#                  (default $BUILD_DIR/fuzz-work; the seeds in tests/fuzz/corpus
#                  are read, never written)
#   FUZZ_ARGS      extra libFuzzer flags (e.g. "-jobs=2 -workers=2")
#   ARSENAL_FUZZ_CKPT_SANDBOX=1   fuzz_ckpt reads each input in the checking child
#                  first (ars_ckpt_validate, as the CLI does): CI's setting; without
#                  it libhdf5 is fuzzed in-process and crashes inside it are reported
#   ARSENAL_FUZZ_H5DATA_SANDBOX=1 the same for fuzz_h5data: the data loader's checking
#                  child reads each input first, as training does
#
# Exit status: 0 no crash, 1 a target crashed (the input is saved under
# $FUZZ_WORK/artifacts/<target>/: copy it to tests/fuzz/regressions/<target>/
# so that ctest fuzz_replay_<target> replays it), 2 usage or setup error.
# Needs the Debian packages clang and libclang-rt-14-dev (libFuzzer).
set -u
cd "$(dirname "$0")/.." || exit 2
root="$(pwd)"

seconds="${FUZZ_SECONDS:-60}"
targets=()
regen=0
regen_data=0
while (($#)); do
    case "$1" in
        -t) seconds="${2:?-t needs seconds}"; shift 2 ;;
        --regen-ckpt-seeds) regen=1; shift ;;
        --regen-data-seeds) regen_data=1; shift ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        config|idx|ckpt|csv|npy|h5data|input) targets+=("$1"); shift ;;
        *) echo "fuzz.sh: unknown argument '$1' (targets: config idx ckpt csv npy h5data input; -t SECONDS)" >&2; exit 2 ;;
    esac
done
((${#targets[@]})) || targets=(config idx ckpt csv npy h5data input)
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "fuzz.sh: -t '$seconds': expected whole seconds" >&2; exit 2; }

build="${BUILD_DIR:-build-fuzz}"
work="${FUZZ_WORK:-$build/fuzz-work}"

cc="${FUZZ_CC:-$(command -v clang || command -v clang-14 || true)}"
if [[ -z "$cc" ]]; then
    echo "fuzz.sh: clang not found: install the Debian packages 'clang' and 'libclang-rt-14-dev'" >&2
    exit 2
fi
probe="$(mktemp -d)"
printf '#include <stdint.h>\n#include <stddef.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' \
    > "$probe/p.c"
if ! "$cc" -fsanitize=fuzzer,address "$probe/p.c" -o "$probe/p" 2> "$probe/err"; then
    echo "fuzz.sh: $cc cannot link -fsanitize=fuzzer (libFuzzer missing): install 'libclang-rt-14-dev'" >&2
    sed 's/^/  /' "$probe/err" >&2
    rm -rf "$probe"
    exit 2
fi
rm -rf "$probe"

echo "fuzz.sh: building the fuzz targets in $build with $cc"
cmake -S . -B "$build" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DARSENAL_FUZZ=ON -DARSENAL_TESTS=OFF > "$build.configure.log" 2>&1 \
    || { cat "$build.configure.log" >&2; echo "fuzz.sh: cmake configure failed" >&2; exit 2; }
rm -f "$build.configure.log"
build_targets=()
# With the checking child in front (ARSENAL_FUZZ_CKPT_SANDBOX=1, and
# ARSENAL_FUZZ_H5DATA_SANDBOX=1 for h5data), libFuzzer's
# handlers are inherited across fork: a child whose libhdf5 asks for >= 512
# MB (its malloc limit) or trips ASan leaves an oom- or crash- artifact,
# while the fuzzer itself goes on and ars_ckpt_validate refuses the input as
# corrupted, which is what the child is for. Without -fork, the fuzzer stops
# at its own first crash, so when it exits 0 every artifact is a child's.
# Moves those aside and prints how many.
sandboxed() {   # whether target $1 runs with its checking child in front
    [[ ("$1" == ckpt && "${ARSENAL_FUZZ_CKPT_SANDBOX:-0}" == 1) ||
       ("$1" == h5data && "${ARSENAL_FUZZ_H5DATA_SANDBOX:-0}" == 1) ]]
}
set_aside_child_deaths() {
    local t="$1" a n=0
    if sandboxed "$t" && [[ "${FUZZ_ARGS:-}" != *-fork* ]]; then
        mkdir -p "$work/refused/$t"
        for a in "$work/artifacts/$t"/*; do
            [[ -e "$a" ]] && mv "$a" "$work/refused/$t/" && n=$((n + 1))
        done
    fi
    echo "$n"
}

for t in "${targets[@]}"; do build_targets+=("fuzz_$t"); done
((regen)) && build_targets+=(gen_ckpt_corpus)
((regen_data)) && build_targets+=(gen_data_corpus)
cmake --build "$build" -j "$(nproc)" --target "${build_targets[@]}" > "$build/fuzz-build.log" 2>&1 \
    || { tail -40 "$build/fuzz-build.log" >&2; echo "fuzz.sh: build failed (log: $build/fuzz-build.log)" >&2; exit 2; }

if ((regen)); then
    rm -f tests/fuzz/corpus/ckpt/*.h5
    ASAN_OPTIONS=detect_leaks=1 "$build/gen_ckpt_corpus" tests/fuzz/corpus/ckpt || exit 2
fi
if ((regen_data)); then
    rm -f tests/fuzz/corpus/h5data/* tests/fuzz/corpus/npy/* tests/fuzz/corpus/csv/*
    mkdir -p tests/fuzz/corpus/h5data tests/fuzz/corpus/npy tests/fuzz/corpus/csv
    ASAN_OPTIONS=detect_leaks=1 "$build/gen_data_corpus" tests/fuzz/corpus || exit 2
fi
((regen || regen_data)) && exit 0

export OPENBLAS_NUM_THREADS=1
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:allocator_may_return_null=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$root/tests/fuzz/lsan.supp:print_suppressions=0}"

status=0
summary=()
for t in "${targets[@]}"; do
    mkdir -p "$work/corpus/$t" "$work/artifacts/$t"
    set_aside_child_deaths "$t" > /dev/null   # an earlier run's
    before="$(ls "$work/artifacts/$t" | wc -l)"
    dict=()
    [[ -f "tests/fuzz/$t.dict" ]] && dict=(-dict="tests/fuzz/$t.dict")
    log="$work/$t.log"
    asan="$ASAN_OPTIONS"
    # libhdf5 has no frame pointers: unwind fully so that lsan.supp can name HDF5 functions
    [[ "$t" == ckpt || "$t" == h5data ]] && asan+=":fast_unwind_on_malloc=0"
    # with the checking child in front (ARSENAL_FUZZ_CKPT_SANDBOX=1) an input
    # that hangs libhdf5 takes the child's time limit (10 s): expected, not slow
    slow=()
    sandboxed "$t" && slow=(-report_slow_units=1000)
    echo "fuzz.sh: fuzz_$t for ${seconds}s (log $log)"
    started=$SECONDS
    # shellcheck disable=SC2086
    ASAN_OPTIONS="$asan" "$build/fuzz_$t" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2560 -malloc_limit_mb=512 -print_final_stats=1 \
        -artifact_prefix="$work/artifacts/$t/" "${dict[@]}" "${slow[@]}" ${FUZZ_ARGS:-} \
        "$work/corpus/$t" "tests/fuzz/corpus/$t" > "$log" 2>&1
    rc=$?
    took=$((SECONDS - started))
    last="$(grep -E '^#[0-9]+' "$log" | tail -1)"
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    [[ -z "$runs" ]] && runs="$(sed -n 's/^#\([0-9]*\).*/\1/p' <<< "$last")"   # -fork mode prints no stats
    cov="$(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<< "$last")"
    ft="$(sed -n 's/.*ft: \([0-9]*\).*/\1/p' <<< "$last")"
    corp="$(sed -n 's/.*corp: \([0-9]*\(\/[0-9a-zA-Z]*\)\{0,1\}\).*/\1/p' <<< "$last")"
    line="fuzz_$t: ${runs:-?} runs in ${took}s, coverage ${cov:-?} edges, ${ft:-?} features, corpus ${corp:-?}"
    refused=0
    ((rc == 0)) && refused="$(set_aside_child_deaths "$t")"   # the fuzzer went on: the children's
    ((refused)) && echo "fuzz.sh: $refused input(s) ended the checking child (refused as corrupted, as the CLI does; in $work/refused/$t)"
    # -fork=1 -ignore_crashes=1 (in FUZZ_ARGS) goes on after a crash: count the artifacts
    if ((rc != 0)) || (($(ls "$work/artifacts/$t" | wc -l) > before)); then
        status=1
        crash="$(ls -t "$work/artifacts/$t/" 2>/dev/null | head -1)"
        line+=" -- CRASH (exit $rc): $work/artifacts/$t/$crash"
        grep -m1 -E 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error|fuzz property failed' "$log" | sed 's/^/  /'
        grep -E '^ +#[0-9]+ 0x' "$log" | grep -v -E 'libFuzzer|fuzzer::|compiler-rt|libc\.so|_start' | head -8 | sed 's/^/  /'
        echo "  keep it: cp '$work/artifacts/$t/$crash' tests/fuzz/regressions/$t/<name>"
    fi
    summary+=("$line")
done
printf '%s\n' "${summary[@]}"
exit "$status"
