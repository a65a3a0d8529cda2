# testutil.sh: sourced by the tests/cli_*.sh scripts: the counters and the
# check they all report with (each script keeps its own matchers).
passed=0 failed=0

check() {   # check NAME COMMAND...: one command, its status is the verdict
    local name="$1"; shift
    if "$@"; then passed=$((passed + 1)); echo "ok   $name"
    else failed=$((failed + 1)); echo "FAIL $name"; fi
}
