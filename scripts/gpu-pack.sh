#!/usr/bin/env bash
# Builds here what scripts/gpu-check.sh runs on a GPU machine that has a CUDA 13.0 driver and
# PyTorch but no Rust toolchain and no network: the release `mpfnet` binary and the examples
# `device_check` and `bench_fold`, built with --features cuda against the CUDA 13.0 wheels
# (PTX from a newer toolkit than the driver's is refused), stripped and xz-compressed into
# target/gpu-pack/ (carry that folder to the GPU machine; about 12 MB per binary).
#
# Linking needs libcuda.so, which belongs to the driver and is in no wheel: a stub exporting
# every `cu*` function cudarc declares stands in for it at link time only (soname
# libcuda.so.1, so the binaries load the real driver library on the GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/cuda-toolkit.sh
stub="$PWD/target/cuda/stub"
if [ ! -e "$stub/libcuda.so" ]; then
    cargo fetch --quiet
    reg="${CARGO_HOME:-$HOME/.cargo}/registry/src"
    cudarc="$(ls -d "$reg"/*/cudarc-0.19.* | sort -V | tail -1)"
    mkdir -p "$stub"
    grep -rhoE '\bcu[A-Z][A-Za-z0-9_]*\b' "$cudarc/src/driver/sys" \
        | sort -u | awk '{ printf "int %s(void) { return 999; }\n", $1 }' > "$stub/libcuda_stub.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stub/libcuda.so" "$stub/libcuda_stub.c"
fi
export LIBRARY_PATH="$stub:$LIBRARY_PATH"
# its own target dir: a plain `cargo build --release` meanwhile would otherwise overwrite the
# CUDA binaries in target/release before they are packed
build="$PWD/target/cuda/build"
CARGO_TARGET_DIR="$build" cargo build --release --features cuda --bin mpfnet \
    --example device_check --example bench_fold -p mpfnet -p mpfnet-stages
out=target/gpu-pack
rm -rf "$out" && mkdir -p "$out"
for b in "$build"/release/mpfnet "$build"/release/examples/device_check "$build"/release/examples/bench_fold; do
    strip -o "$out/$(basename "$b")" "$b"
    xz -9 -T2 "$out/$(basename "$b")"
done
cp scripts/gpu-check.sh stages/bench/pytorch_step.py "$out/"
du -sh "$out"/*
echo "carry target/gpu-pack to the GPU machine and run: bash target/gpu-pack/gpu-check.sh"
