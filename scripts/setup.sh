#!/usr/bin/env bash
# Installs the Debian packages arsenal needs and builds it (idempotent).
#   scripts/setup.sh               packages + release build in build/
#   scripts/setup.sh --dev         also the reference/benchmark tools (python3-torch, h5py)
#   scripts/setup.sh --hardening   also clang + libFuzzer and valgrind (scripts/fuzz.sh, sanitize.sh)
#   BUILD_DIR=dir CMAKE_ARGS="-DARSENAL_SANITIZE=ON" scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

packages=(build-essential cmake pkg-config
          libopenmpi-dev openmpi-bin libopenblas-dev libhdf5-dev hdf5-tools
          libcmocka-dev libinih-dev zlib1g-dev libplplot-dev plplot-driver-cairo fonts-dejavu-core
          libprotobuf-c-dev protobuf-c-compiler python3-onnx
          libdnnl-dev   # optional for the build: [run] precision = bf16 on CPUs with AVX512-BF16 / AMX (docs/bf16.md)
          iproute2 iptables
          dataset-fashion-mnist)
for option in "$@"; do
    case "$option" in
        --dev) packages+=(python3-torch python3-h5py python3-numpy) ;;
        --hardening) packages+=(clang libclang-rt-14-dev valgrind) ;;
        *) echo "setup.sh: unknown option '$option' (--dev, --hardening)" >&2; exit 2 ;;
    esac
done

install_missing setup "${packages[@]}"

build_dir="${BUILD_DIR:-build}"
# shellcheck disable=SC2086
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release ${CMAKE_ARGS:-}
cmake --build "$build_dir" -j "$(nproc)"
echo "setup: built $build_dir/arsenal"
