#!/usr/bin/env bash
# CI's CUDA step: compiles every target of the workspace with `--features cuda`, then with
# `--features cudnn` (CA-I3D's conv3d through cuDNN; checking needs no cuDNN library), against
# the CUDA 13.0 toolkit from NVIDIA's wheels (scripts/cuda-toolkit.sh), on a machine with no GPU
# and no system CUDA. It type-checks and compiles candle's CUDA kernels (nvcc, most of its 7-8
# minutes on 2 cores, once for both); it does not link (that needs libcuda and libcudnn, see
# scripts/gpu-pack.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
. scripts/cuda-toolkit.sh
echo "cuda-check: toolkit $(nvcc --version | tail -1) ready in $(( $(date +%s) - t0 )) s"
cargo check --workspace --all-targets --features cuda
echo "cuda-check: --features cuda done in $(( $(date +%s) - t0 )) s"
cargo check --workspace --all-targets --features cudnn
echo "cuda-check: done in $(( $(date +%s) - t0 )) s"
