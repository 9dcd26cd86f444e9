#!/usr/bin/env bash
# The benchmarks a GPU machine runs, in under eight minutes; JSON lines go to a results folder.
#
#   benchmarks/gpu.sh [--install] [--smoke] [--out DIR]
#
#   --install  pip install -e ".[train]" and "jax[cuda12]" first (nothing else is installed)
#   --smoke    tiny sizes (small_cnn instead of ResNet-32 / WRN-28-10, batch 16, 2 steps,
#              tiny solver sizes): checks the script end to end on a CPU in under a minute
#   --out DIR  results folder (default benchmarks/results/<host>-<date>)
#
# Runs: train_step.py for ResNet-32 at C = 10 and 100 and WRN-28-10 at C = 10, methods CE
# and LPL (fixed, 50 inner steps), batch 128; then inner_solver.py (all sizes and sweeps,
# in one process) and solver_variants.py (loop formulations, e.g. a static trip count); then
# communication.py: the solver on the GPU against lpjax 0.2.0's (when the checkout has git
# history), and LPL's bytes on the wire per train step from the steps compiled for 8 (and
# 64) fake CPU devices (the layout's traffic; no timing).
# Each command has its own time limit, so the whole script stays under eight minutes even
# if one part is slow; a part that times out is reported and skipped.
set -uo pipefail

cd "$(dirname "$0")/.."
INSTALL=0
SMOKE=0
OUT=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --install) INSTALL=1 ;;
    --smoke) SMOKE=1 ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
OUT="${OUT:-benchmarks/results/$(hostname -s)-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"

if [[ $INSTALL == 1 ]]; then
  python -m pip install -e ".[train]" "jax[cuda12]" || exit 1
fi

# Compiled programs are cached across runs of this script (a rerun skips most compiling).
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$(dirname "$OUT")/.jax_cache}"

START=$(date +%s)
run() {  # run LIMIT_SECONDS NAME COMMAND...: log to $OUT/NAME.log, JSON lines to $OUT/NAME.jsonl
  local limit="$1" name="$2"
  shift 2
  echo "== $name: $*"
  timeout "$limit" "$@" --out "$OUT/$name.jsonl" >"$OUT/$name.log" 2>&1
  local rc=$?
  grep -v '^{' "$OUT/$name.log" | grep -v -E '^(W|I)[0-9]{4} ' | tail -n 40
  if [[ $rc == 124 ]]; then
    echo "!! $name stopped after ${limit}s (time limit)"
  elif [[ $rc != 0 ]]; then
    echo "!! $name failed (exit $rc); see $OUT/$name.log"
  fi
  echo "   elapsed: $(( $(date +%s) - START ))s"
}

python - >"$OUT/environment.txt" 2>&1 <<'EOF'
import jax, jaxlib, platform, datetime
print("date", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
print("jax", jax.__version__, "jaxlib", jaxlib.__version__, "python", platform.python_version())
print("backend", jax.default_backend(), "devices", jax.devices())
EOF
command -v nvidia-smi >/dev/null && nvidia-smi >>"$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt" | head -5

if [[ $SMOKE == 1 ]]; then
  RESNET=small_cnn; WRN=small_cnn; BATCH=16; STEPS=2; WARMUP=1; SOLVER_FLAGS=(--smoke)
  LIMIT_R=60; LIMIT_W=60; LIMIT_S=60; LIMIT_V=60
else
  RESNET=resnet32; WRN=wrn28_10; BATCH=128; STEPS=20; WARMUP=3; SOLVER_FLAGS=(--repeats 20)
  LIMIT_R=120; LIMIT_W=100; LIMIT_S=45; LIMIT_V=30
fi

run "$LIMIT_R" train_step_resnet32 python -m benchmarks.train_step --model "$RESNET" \
  --num-classes 10,100 --methods ce,lpl_fixed --batch-size "$BATCH" --steps "$STEPS" \
  --warmup "$WARMUP"
run "$LIMIT_W" train_step_wrn28_10 python -m benchmarks.train_step --model "$WRN" \
  --num-classes 10 --methods ce,lpl_fixed --batch-size "$BATCH" --steps "$STEPS" \
  --warmup "$WARMUP"
run "$LIMIT_S" inner_solver python -m benchmarks.inner_solver --in-process "${SOLVER_FLAGS[@]}"
VARIANT_FLAGS=()
[[ $SMOKE == 1 ]] && VARIANT_FLAGS=(--smoke)
run "$LIMIT_V" solver_variants python -m benchmarks.solver_variants "${VARIANT_FLAGS[@]}"
COMM_FLAGS=()
[[ $SMOKE == 1 ]] && COMM_FLAGS=(--smoke)
run "$LIMIT_S" communication_one_device python -m benchmarks.communication --one-device \
  "${COMM_FLAGS[@]}"
run 120 communication env JAX_PLATFORMS=cpu python -m benchmarks.communication --no-timing \
  "${COMM_FLAGS[@]}"

echo "results in $OUT (total $(( $(date +%s) - START ))s)"
