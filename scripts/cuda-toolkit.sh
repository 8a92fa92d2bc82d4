#!/usr/bin/env bash
# Assembles a CUDA toolkit from NVIDIA's PyPI wheels inside the clone (target/cuda/), for
# machines with no system CUDA and no GPU: enough for `cargo check/build --features cuda`.
# Source it (`. scripts/cuda-toolkit.sh`) to get CUDA_HOME, PATH, CUDA_COMPUTE_CAP exported;
# the second call is instant (a stamp records the pinned version).
#
# Pin: CUDA 13.0, the toolkit the GPU machines' driver runs (PTX from a newer toolkit than the
# driver's is refused at load time). cudarc 0.19 (candle 0.11's) accepts toolkits up to 13.4;
# the CUDA 12 wheels ship no `nvcc` driver.
# The metapackage leaves NVVM and the CRT headers unpinned: left alone, pip takes the newest
# (13.5), whose PTX (.version 9.5) the 13.0 ptxas refuses; so they are pinned to 13.0 too.
# Nothing is cached outside the clone: pip runs with its cache off.
set -euo pipefail
PINS=("cuda-toolkit[nvcc,cccl,cudart,cublas,curand,nvrtc]==13.0.2" "nvidia-nvvm==13.0.88" "nvidia-cuda-crt==13.0.88")
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
top="$repo/target/cuda"
venv="$top/venv"
root="$top/root"
stamp="$top/stamp"

if [ "$(cat "$stamp" 2>/dev/null)" != "${PINS[*]}" ]; then
    rm -rf "$top"
    mkdir -p "$top"
    python3 -m venv "$venv"
    PIP_NO_CACHE_DIR=1 "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "${PINS[@]}"
    cu="$(echo "$venv"/lib/python3*/site-packages/nvidia/cu13)"
    [ -x "$cu/bin/nvcc" ] || { echo "cuda-toolkit.sh: no nvcc in $cu" >&2; exit 1; }
    mkdir -p "$root/lib64"
    for d in bin include nvvm; do ln -s "$cu/$d" "$root/$d"; done
    # links to every library, plus the unversioned names the linker looks for
    for f in "$cu"/lib/*.so* "$cu"/lib/*.a; do
        [ -e "$f" ] || continue
        ln -sf "$f" "$root/lib64/$(basename "$f")"
        base="$(basename "$f" | sed -E 's/\.so(\.[0-9]+)+$/.so/')"
        [ "$base" != "$(basename "$f")" ] && ln -sf "$f" "$root/lib64/$base"
    done
    echo "${PINS[*]}" > "$stamp"
fi

export CUDA_HOME="$root" CUDA_PATH="$root" CUDA_ROOT="$root"
export PATH="$root/bin:$PATH"
export LIBRARY_PATH="$root/lib64${LIBRARY_PATH:+:$LIBRARY_PATH}"
# No nvidia-smi here to ask: H100/H200 are compute capability 9.0.
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-$(nproc)}"
