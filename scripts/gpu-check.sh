#!/usr/bin/env bash
# Runs on a GPU machine (one H100 or H200, CUDA 13.0 driver, PyTorch with CUDA, no Rust, no
# network), from the repository root, with target/gpu-pack/ made by scripts/gpu-pack.sh:
#   1. every CA-I3D op on cuda:0 (conv3d through cuDNN, the others through stock candle ops)
#      against the custom CPU op, forward and backward, 1e-4 relative in f32;
#   2. one CA-I3D training step at the benchmark widths (batch 4, 5x10x128x128) and at the
#      paper's (batch 16), beside PyTorch's on the same GPU;
#   3. bench_fold at paper scale on cuda:0 (one fold, extrapolated to CASME II's 26);
#   4. the demo pipeline with --device cuda:0.
# Prints one table at the end. Meant to finish within 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/../.."
pack=target/gpu-pack
bin="$(mktemp -d)"
for f in "$pack"/*.xz; do
    python3 -c 'import lzma,sys; open(sys.argv[2],"wb").write(lzma.open(sys.argv[1]).read())' \
        "$f" "$bin/$(basename "$f" .xz)"
    chmod +x "$bin/$(basename "$f" .xz)"
done
# The binaries link libcudart.so.13, libcublas.so.13, libcurand.so.10 and libcudnn.so.9 (and
# the driver's libcuda.so.1): take them from the system CUDA, else from PyTorch's NVIDIA wheels.
cuda_libs="${CUDA_HOME:-/usr/local/cuda}/lib64"
wheel_libs=$(python3 -c 'import glob, os, nvidia; r = os.path.dirname(nvidia.__path__[0] + "/"); print(":".join(sorted(glob.glob(r + "/*/lib") + glob.glob(r + "/*/*/lib"))))' 2>/dev/null || true)
export LD_LIBRARY_PATH="$cuda_libs:${wheel_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if ldd "$bin/mpfnet" | grep -q "not found"; then
    echo "missing CUDA libraries (LD_LIBRARY_PATH=$LD_LIBRARY_PATH):"
    ldd "$bin/mpfnet" | grep "not found"
    exit 1
fi
log="$bin/log"
row() { printf '%-48s %s\n' "$1" "$2" | tee -a "$log.table"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$log.gpu"

echo "== 1. op parity on cuda:0"
if timeout 120 "$bin/device_check" --device cuda:0 --steps 3 --step-batch 4 | tee "$log.parity"; then
    row "op parity (fwd+bwd, 1e-4)" "pass"
else
    row "op parity (fwd+bwd, 1e-4)" "FAIL (see above)"
fi
step_bench=$(grep -o '[0-9.]* ms' "$log.parity" | tail -1)
echo "== 2. training step, paper widths, batch 16"
paper=$(timeout 120 "$bin/device_check" --device cuda:0 --steps 3 --step-batch 16 --widths paper --tol 1 | grep -o '[0-9.]* ms' | tail -1)
pt_bench=$(timeout 120 python3 "$pack/pytorch_step.py" --device cuda:0 --batch 4 | grep -o 'median [0-9]* ms')
pt_paper=$(timeout 120 python3 "$pack/pytorch_step.py" --device cuda:0 --batch 16 --paper | grep -o 'median [0-9]* ms')
row "step bench widths b4 128: mpfnet / pytorch" "$step_bench / $pt_bench"
row "step paper widths b16 128: mpfnet / pytorch" "$paper / $pt_paper"
echo "== 3. bench_fold, paper scale, cuda:0"
timeout 200 "$bin/bench_fold" --device cuda:0 --batch 16 --steps 3 | tee "$log.fold"
row "bench_fold (per fold / 26 folds)" "$(grep -iE 'fold|total' "$log.fold" | tail -2 | tr '\n' ' ')"
echo "== 4. demo pipeline on cuda:0"
start=$(date +%s)
if timeout 240 "$bin/mpfnet" run pipelines/demo.toml --device cuda:0 --quiet --cache "$bin/cache" > "$log.demo" 2>&1; then
    row "demo on cuda:0 ($(( $(date +%s) - start )) s)" "$(grep -E '^MPFNet-[PC]' "$log.demo" | awk '{print $1" UF1 "$7" UAR "$8}' | tr '\n' ' ')"
else
    row "demo on cuda:0" "FAIL: $(tail -3 "$log.demo" | tr '\n' ' ')"
fi
echo
echo "== summary ($(cat "$log.gpu"))"
cat "$log.table"
