#!/usr/bin/env bash
# Builds here what scripts/gpu-check.sh runs on a GPU machine that has a CUDA 13.0 driver and
# PyTorch but no Rust toolchain and no network: the release `mpfnet` binary and the examples
# `device_check` and `bench_fold`, built with --features cudnn (CUDA plus cuDNN) against the
# CUDA 13.0 wheels (PTX from a newer toolkit than the driver's is refused), stripped and
# xz-compressed into target/gpu-pack/ (carry that folder to the GPU machine; about 12 MB per
# binary).
#
# Linking needs libcuda.so, which belongs to the driver and is in no wheel, and libcudnn.so.9
# (the `cudnn` feature: CA-I3D's conv3d through cuDNN), whose wheel is 600 MB: stubs exporting
# every function cudarc declares stand in for them at link time only. Their sonames are the
# real ones, so on the GPU machine the binaries load the driver's libcuda.so.1 and the
# libcudnn.so.9 of PyTorch's wheels (scripts/gpu-check.sh finds them).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/cuda-toolkit.sh
stub="$PWD/target/cuda/stub"
# stub_lib NAME SONAME: lib$NAME.so from the `$NAME*` functions in cudarc's $NAME bindings
stub_lib() {
    [ -e "$stub/lib$1.so" ] && return
    cargo fetch --quiet
    local reg="${CARGO_HOME:-$HOME/.cargo}/registry/src" cudarc
    cudarc="$(ls -d "$reg"/*/cudarc-0.19.* | sort -V | tail -1)"
    mkdir -p "$stub"
    local sys="$cudarc/src/$1/sys"
    [ "$1" = cuda ] && sys="$cudarc/src/driver/sys"
    grep -rhoE "\b$1[A-Z][A-Za-z0-9_]*\b" "$sys" \
        | sort -u | awk '{ printf "int %s(void) { return 999; }\n", $1 }' > "$stub/lib$1_stub.c"
    gcc -shared -fPIC -Wl,-soname,"$2" -o "$stub/lib$1.so" "$stub/lib$1_stub.c"
}
stub_lib cuda libcuda.so.1
stub_lib cudnn libcudnn.so.9
export LIBRARY_PATH="$stub:$LIBRARY_PATH"
# its own target dir: a plain `cargo build --release` meanwhile would otherwise overwrite the
# CUDA binaries in target/release before they are packed
build="$PWD/target/cuda/build"
CARGO_TARGET_DIR="$build" cargo build --release --features cudnn --bin mpfnet \
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
