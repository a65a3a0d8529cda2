#!/usr/bin/env bash
# Runs the whole ctest suite (unit, MPI on 1-3 ranks, CLI, fuzz replays)
# built with AddressSanitizer + UndefinedBehaviorSanitizer, LeakSanitizer on,
# in a separate build directory; optionally valgrind memcheck on a short
# training run of the release build.
#
#   scripts/sanitize.sh              ASan/UBSan/LSan build in build-asan + ctest
#   scripts/sanitize.sh --valgrind   also: valgrind memcheck on examples/spirals.cfg,
#                                    one epoch, release build in build/ (set up by setup.sh)
#   scripts/sanitize.sh --valgrind-only
#   BUILD_DIR=dir  CTEST_ARGS="-R mpi_"  SANITIZE_EXCLUDE=regex  scripts/sanitize.sh
#
# Leak reports from third-party libraries are suppressed by
# tests/fuzz/lsan.supp (Open MPI's own allocations, which it never frees;
# one HDF5 leak on corrupted files): a leak in arsenal itself still fails,
# in MPI runs too (LD_PRELOAD tests/fuzz/nodlclose.c keeps Open MPI's
# plugins mapped so that its leaks can be told apart).
# Exit status: 0 clean, 1 a test or valgrind failed, 2 setup error.
set -u
cd "$(dirname "$0")/.." || exit 2
root="$(pwd)"

asan=1 valgrind=0
for arg in "$@"; do
    case "$arg" in
        --valgrind) valgrind=1 ;;
        --valgrind-only) valgrind=1 asan=0 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "sanitize.sh: unknown argument '$arg' (--valgrind, --valgrind-only)" >&2; exit 2 ;;
    esac
done

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
status=0

if ((asan)); then
    build="${BUILD_DIR:-build-asan}"
    echo "sanitize.sh: configuring $build (-DARSENAL_SANITIZE=ON)"
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DARSENAL_SANITIZE=ON > "$build.configure.log" 2>&1 \
        || { cat "$build.configure.log" >&2; echo "sanitize.sh: configure failed" >&2; exit 2; }
    rm -f "$build.configure.log"
    echo "sanitize.sh: building"
    cmake --build "$build" -j "$(nproc)" > "$build/sanitize-build.log" 2>&1 \
        || { tail -40 "$build/sanitize-build.log" >&2; echo "sanitize.sh: build failed ($build/sanitize-build.log)" >&2; exit 2; }
    # Open MPI unloads its plugins before LeakSanitizer reports: keep them
    # mapped (dlclose a no-op, tests/fuzz/nodlclose.c) so that its leaks are
    # named and suppressed by lsan.supp while arsenal's are still reported.
    # The shim precedes libasan: verify_asan_link_order=0 (it intercepts
    # nothing ASan does). detect_odr_violation=0: Open MPI's plugins define
    # some globals twice.
    shim="$(cd "$build" && pwd)/libnodlclose.so"
    cc -shared -fPIC -O2 -o "$shim" tests/fuzz/nodlclose.c || { echo "sanitize.sh: cannot build $shim" >&2; exit 2; }
    export LD_PRELOAD="$shim${LD_PRELOAD:+:$LD_PRELOAD}"
    # Distinct exit codes: the CLI tests expect status 1 for a clean error,
    # which is also the sanitizers' default, so a report must not look like it.
    # allocator_may_return_null=1: a refused huge allocation returns NULL as
    # with glibc (arsenal reports it) instead of ASan aborting the process.
    export ASAN_OPTIONS="detect_leaks=1:fast_unwind_on_malloc=0:detect_odr_violation=0:verify_asan_link_order=0:strict_string_checks=1:allocator_may_return_null=1:exitcode=86"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=87"
    export LSAN_OPTIONS="suppressions=$root/tests/fuzz/lsan.supp:print_suppressions=0"
    # Left out by default (SANITIZE_EXCLUDE= runs everything): cli_experiment
    # trains real models for minutes and exceeds its 600 s timeout at ASan's
    # speed; test_watchdog times sub-second deadlines that ASan's slowdown
    # breaks. Neither is about memory errors the rest of the suite misses.
    exclude="${SANITIZE_EXCLUDE-^(cli_experiment|test_watchdog)$}"
    exclude_args=()
    [[ -n "$exclude" ]] && exclude_args=(-E "$exclude") && echo "sanitize.sh: leaving out $exclude"
    echo "sanitize.sh: ctest under ASan+UBSan+LSan (ASAN_OPTIONS=$ASAN_OPTIONS)"
    start=$SECONDS
    # shellcheck disable=SC2086
    ctest --test-dir "$build" --output-on-failure -j 2 --timeout 900 "${exclude_args[@]}" ${CTEST_ARGS:-} 2>&1 \
        | tee "$build/sanitize-ctest.log"
    rc=${PIPESTATUS[0]}
    echo "sanitize.sh: ctest took $((SECONDS - start))s"
    if ((rc != 0)); then
        status=1
        echo "sanitize.sh: FAILED; sanitizer reports:"
        grep -h -E 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: (Address|Undefined)' \
            "$build/sanitize-ctest.log" | sort | uniq -c | head -20
    fi
fi

if ((valgrind)); then
    if ! command -v valgrind > /dev/null; then
        echo "sanitize.sh: valgrind not found: install the Debian package 'valgrind'" >&2
        exit 2
    fi
    release="${RELEASE_DIR:-build}"
    if [[ ! -x "$release/arsenal" ]]; then
        cmake -S . -B "$release" -DCMAKE_BUILD_TYPE=Release > /dev/null && cmake --build "$release" -j "$(nproc)" --target arsenal > /dev/null \
            || { echo "sanitize.sh: cannot build $release/arsenal" >&2; exit 2; }
    fi
    supp=()
    for f in /usr/share/openmpi/openmpi-valgrind.supp "$root/tests/fuzz/valgrind.supp"; do
        [[ -f "$f" ]] && supp+=("--suppressions=$f")
    done
    log="$release/valgrind-spirals.log"
    echo "sanitize.sh: valgrind memcheck: arsenal train examples/spirals.cfg --set run.epochs=1 (log $log)"
    valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \
        --track-origins=yes --error-exitcode=99 "${supp[@]}" --log-file="$log" \
        "$release/arsenal" train examples/spirals.cfg --set run.epochs=1 --quiet
    rc=$?
    grep -E 'ERROR SUMMARY|definitely lost|indirectly lost|possibly lost|still reachable|in use at exit' "$log" | sed 's/^==[0-9]*== /  /'
    if ((rc != 0)); then
        status=1
        echo "sanitize.sh: valgrind found errors (exit $rc); first ones:"
        grep -A12 -m3 -E '^==[0-9]+== (Invalid|Conditional|Use of uninit|Syscall param|Mismatched)|definitely lost in' "$log" | head -60
    fi
fi

((status == 0)) && echo "sanitize.sh: clean"
exit "$status"
