# lib.sh: shell helpers shared by the scripts in scripts/ (sourced, not run).
# shellcheck shell=bash

# install_missing TAG PACKAGE...: apt-installs those of the Debian packages
# that are not installed yet (through sudo when not root) and says so,
# prefixed with TAG; does nothing when all are there, so callers stay
# idempotent.
install_missing() {
    local tag="$1"; shift
    local missing=() p status sudo=""
    for p in "$@"; do
        # Captured, not piped into `grep -q`: under pipefail grep's early
        # exit can fail the pipe by SIGPIPE and count the package missing.
        status="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
        [[ "$status" == *"install ok installed"* ]] || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
    echo "$tag: installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}
