#!/usr/bin/env bash
# The learning benchmark (pipelines/bench/learning.toml) over several seeds: per variant and
# seed the pooled UF1 and UAR beside the nearest-class-mean baseline (same folds), then the mean
# and standard deviation over seeds, and the wall time.
#   scripts/learning-bench.sh                 # seeds 1 2 3
#   scripts/learning-bench.sh 1 2 3 4 5       # other seeds
#   PIPELINE=... MPFNET=... EXTRA="--set a=b" scripts/learning-bench.sh   # a smaller variant
set -euo pipefail
PIPELINE=${PIPELINE:-pipelines/bench/learning.toml}
MPFNET=${MPFNET:-target/release/mpfnet}
SEEDS=("$@")
[ ${#SEEDS[@]} -eq 0 ] && SEEDS=(1 2 3)
RUNS=${MPFNET_RUNS:-runs}
name=$(basename "$PIPELINE" .toml)
start=$(date +%s)
records=()
for s in "${SEEDS[@]}"; do
  t0=$(date +%s)
  # shellcheck disable=SC2086
  "$MPFNET" run "$PIPELINE" --set seed="$s" ${EXTRA:-} >&2
  rec="$RUNS/$name/$(cat "$RUNS/$name/latest")/run.json"
  records+=("$s:$rec:$(( $(date +%s) - t0 ))")
done
python3 - "$(( $(date +%s) - start ))" "${records[@]}" <<'PY'
import json, statistics, sys
wall = int(sys.argv[1])
rows = {}
print(f"{'seed':>4}  {'variant':<10} {'UF1':>6} {'UAR':>6}   wall")
for arg in sys.argv[2:]:
    seed, path, secs = arg.split(":")
    m = json.load(open(path))["metrics"]["report"]
    for stage, v in sorted(m.items()):
        rows.setdefault(v["variant"], []).append((v["uf1"], v["uar"]))
        print(f"{seed:>4}  {v['variant']:<10} {v['uf1']:6.3f} {v['uar']:6.3f}   {secs}s")
print()
print(f"{'variant':<10} {'UF1 mean':>8} {'std':>6} {'UAR mean':>8} {'std':>6}  seeds")
sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0
for k, v in rows.items():
    uf1 = [a for a, _ in v]; uar = [b for _, b in v]
    print(f"{k:<10} {statistics.mean(uf1):8.3f} {sd(uf1):6.3f} {statistics.mean(uar):8.3f} {sd(uar):6.3f}  {len(v)}")
print(f"\nwall time {wall}s over {len(sys.argv) - 2} seed(s)")
PY
