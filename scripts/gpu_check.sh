#!/usr/bin/env bash
# The prepared check for a lent GPU, in one go and under 8 minutes: the tests that need CUDA, the
# GPU benchmark (bound, step at batch 32 and 256, captured step, ART on the same GPU, embedding)
# and the benchmark suite's default and grain members (training and evaluation) with trainer=gpu.
# Figures go to $OUT/gpu_check.json.
#   here, once:  bash scripts/gpu_wheels.sh          (the packages the GPU image lacks, into .whl/)
#   there:       bash scripts/gpu_check.sh           (device tool: run, carry ['.whl'])
# Dry run of the CPU parts: GPU_CHECK_DEVICE=cpu bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-check}"
DEVICE="${GPU_CHECK_DEVICE:-cuda}"
mkdir -p "$OUT"
# Here the project's .venv (a dry run); there, the GPU image's python3 (.venv is not carried).
PY="${PYTHON:-python3}"
[ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ] && PY=.venv/bin/python
if [ "$DEVICE" = cuda ] && [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
t0=$(date +%s)
stage() { echo "== $1 ($(( $(date +%s) - t0 )) s)"; }
[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1

stage "tests that need CUDA"
"$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -20 | tee "$OUT/tests.log"

stage "benchmark"
if [ "$DEVICE" = cuda ]; then bench=(--batch 32,256 --compile --data-images 2000); else bench=(--batch 8 --steps 2 --repeats 2 --embed-images 64 --data-images 100 --no-art); fi
"$PY" scripts/bench.py --device "$DEVICE" "${bench[@]}" --json "$OUT/bench.json" 2>&1 | grep -v "^INFO" | tee "$OUT/bench.log"

stage "the suite on the GPU: default and grain, seed 0"
# `briarpatch suite ... trainer=gpu` in one go, as the benchmark issue asks; each run's seconds are in
# suite.log, so the full suite's GPU time (10 members x 3 seeds) follows. Bounded: a slow start still
# leaves the finished runs (the suite continues where it stopped when rerun with the same --out).
if [ "$DEVICE" = cuda ]; then run=(trainer=gpu); else run=(experiment=smoke); fi
start=$(date +%s)
timeout "${GPU_CHECK_SUITE_S:-300}" "$PY" -m briarpatch.cli suite --members default,grain --seeds 0 \
  --out /tmp/gpu-check-suite "${run[@]}" eval.cache_dir=/tmp/gpu-check-cache > "$OUT/suite.log" 2>&1
echo "exit $? after $(( $(date +%s) - start )) s" | tee -a "$OUT/suite.log"
grep "seed 0:" "$OUT/suite.log"
cp /tmp/gpu-check-suite/suite.md /tmp/gpu-check-suite/suite.json "$OUT/" 2>/dev/null
cp /tmp/gpu-check-suite/default/seed0/report/report.json "$OUT/report.json" 2>/dev/null

stage "summary"
"$PY" - "$OUT" "$start" <<'PY'
import json, sys, time
from pathlib import Path
out, start = Path(sys.argv[1]), float(sys.argv[2])
summary = {"bench": json.loads((out / "bench.json").read_text()) if (out / "bench.json").is_file() else None,
           "tests": (out / "tests.log").read_text().strip().splitlines()[-1:] if (out / "tests.log").is_file() else None}
report = out / "report.json"
if report.is_file():
    r = json.loads(report.read_text())
    summary["default_run"] = {
        "accuracy": [r["clean"]["accuracy"], r["patched"]["accuracy"]],
        "dp": [r["clean"]["demographic_parity_difference"], r["patched"]["demographic_parity_difference"]],
        "probe_non_adaptive": r["leakage"]["non_adaptive"]["logistic"]["balanced_accuracy"],
        "probe_adaptive": r["leakage"]["adaptive"]["logistic"]["balanced_accuracy"],
        "robustness": {k: v["non_adaptive_probe"] for k, v in r.get("robustness", {}).items()}}
(out / "gpu_check.json").write_text(json.dumps(summary, indent=2))
print(json.dumps(summary, indent=2)[:3000])
PY
stage "done"
