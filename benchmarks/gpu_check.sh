#!/usr/bin/env bash
# One prepared GPU check, for a machine with an NVIDIA GPU, CuPy and PyTorch (the step timeouts add up to
# 570 s, under the device tool's 10-minute limit; on an H200 the whole check took about 3-4 minutes, before
# step 5b was added):
#   1. environment (nvidia-smi, versions)                           -> head of test_gpu.log
#   2. every @pytest.mark.gpu test (CuPy backend vs numpy, ...)     -> test_gpu.log
#   3. layer-update benchmark on cupy: ours vs cuBLAS floor vs torch autograd on the GPU
#                                                                   -> bench_update_gpu.{log,json}
#   4. Table 1 MLP training step on cupy vs torch autograd on the GPU
#                                                                   -> bench_step_gpu.{log,json}
#   5. online two-point rule: per-step fused update vs a copy of W on the GPU
#                                                                   -> bench_online_gpu.json
#   5b. strictly sequential B = 1 training step (the default online rule) vs reading and writing every W
#      (and its momentum buffer) once, samples/s on the GPU (issue 18)
#                                                                   -> bench_step_gpu.log
#   6. vgg conv net training step / CIFAR-10 epoch time on cupy vs torch autograd on the GPU
#      (torch in plain float32 and with its default TF32 convolutions)
#                                                                   -> bench_conv_gpu.json (log: bench_step_gpu.log)
#   7. where the MLP and VGG steps' and the plain layer update's (m = 1024, 4096²) time goes: host vs
#      GPU time, kernels per step, top kernels; A/B of kernel choices
#                                                                   -> profile.json (log: bench_step_gpu.log)
#   8. with Fashion-MNIST carried along: `threefactor train --backend cupy` for 10 epochs (accuracy, epoch time)
#                                                                   -> bench_step_gpu.log
# (The GPU tests of step 2 include the conv, online and training ones, and `threefactor train --arch vgg`.)
# Writes at most these 8 files to $OUT (default benchmarks/results/gpu-<date>).  Needs no install:
# the repository root goes on PYTHONPATH.  Usage:  bash benchmarks/gpu_check.sh
# Tests on real Fashion-MNIST (the examples on cupy) need the data there: in the repository root here,
#   echo /.data/ >>.git/info/exclude; mkdir -p .data/fmnist; cp /usr/share/datasets/fashion-mnist/* .data/fmnist/
# then name .data in the device call's carry and prefix the command with THREEFACTOR_DATA=$PWD/.data.
# GPU_CHECK_DRY=1: a rehearsal without a GPU (tests/test_gpu_check.py runs it on the CuPy emulator in CI):
# tiny shapes, torch on the CPU, no pytest step (CI runs the GPU tests on the emulator itself).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results/gpu-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
status=0
if [ -n "${GPU_CHECK_DRY:-}" ]; then
  UPDATE=(--m 16 --shapes 32x64 --budget 0.01); STEP=(--batch 8 --hidden 16 16 --groups 4 --budget 0.01)
  ONLINE=(--shapes 16x32 --streams 1 --groups 4 --budget 0.01); B1=(--samples 2 --rounds 1)
  CONV=(--arch conv4-pool-fc8 --batch 2 --groups 2 --steps 1 --warmup 1 --device cpu)
  PROFILE=(--small --torch-device cpu --steps 4)
else
  UPDATE=(--budget 0.4); STEP=(--budget 1); ONLINE=(--budget 0.3); B1=(--samples 100 --rounds 3)
  CONV=(--arch vgg --device cuda --steps 10); PROFILE=(--steps 20)
fi

{
  date -Is; nvidia-smi || true
  "$PY" - <<'PYEOF'
import numpy, sys
print("python", sys.version.split()[0], "numpy", numpy.__version__)
for name in ("cupy", "torch", "numba"):
    try:
        mod = __import__(name)
        print(name, mod.__version__)
    except Exception as exc:
        print(name, "MISSING:", exc)
import torch
print("torch.cuda", torch.cuda.is_available(), torch.version.cuda,
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
from threefactor.bench.machine import machine_info
print(machine_info())
PYEOF
} >"$OUT/test_gpu.log" 2>&1
cat "$OUT/test_gpu.log"

echo "== GPU tests"
if [ -n "${GPU_CHECK_DRY:-}" ]; then
  echo "dry run: GPU tests skipped" | tee -a "$OUT/test_gpu.log"
else
  timeout 150 "$PY" -m pytest -q -m gpu -rs tests/ 2>&1 | tee -a "$OUT/test_gpu.log" || status=1
fi

echo "== layer update (cupy, float32)"
timeout 100 "$PY" -m threefactor bench --backend cupy "${UPDATE[@]}" --profile \
  --json "$OUT/bench_update_gpu.json" 2>&1 | tee "$OUT/bench_update_gpu.log" || status=1

echo "== MLP training step (cupy, float32)"
timeout 40 "$PY" benchmarks/bench_step.py --backend cupy "${STEP[@]}" \
  --json "$OUT/bench_step_gpu.json" 2>&1 | tee "$OUT/bench_step_gpu.log" || status=1

echo "== online per-step update (cupy, float32)"
timeout 35 "$PY" benchmarks/bench_online.py --backend cupy "${ONLINE[@]}" \
  --json "$OUT/bench_online_gpu.json" 2>&1 | tee -a "$OUT/bench_step_gpu.log" || status=1

echo "== online B = 1 training step (cupy, float32)"
timeout 25 "$PY" benchmarks/bench_online_b1.py --backend cupy "${B1[@]}" 2>&1 | tee -a "$OUT/bench_step_gpu.log" \
  || status=1

echo "== conv net (vgg) training step and epoch time (cupy, float32)"
timeout 65 "$PY" benchmarks/bench_conv_epoch.py --backend cupy "${CONV[@]}" \
  --json "$OUT/bench_conv_gpu.json" 2>&1 | tee -a "$OUT/bench_step_gpu.log" || status=1

echo "== profile: MLP and VGG steps, ours and torch (cupy, float32)"
timeout 80 "$PY" benchmarks/profile_gpu.py --which mlp vgg update "${PROFILE[@]}" --json "$OUT/profile.json" \
  2>&1 | grep -v USDT | tee -a "$OUT/bench_step_gpu.log" | grep -E "^==|Error|Traceback" || status=1

echo "== Fashion-MNIST, the default MLP run on the GPU for 10 epochs (where the data is found)"
if [ -n "${GPU_CHECK_DRY:-}" ]; then
  echo "dry run: training skipped"
elif "$PY" -c "from threefactor.data.download import find_dataset as f; raise SystemExit(f('fmnist', None) is None)"; then
  RUN="$(mktemp -d)/fmnist-gpu"
  timeout 75 "$PY" -m threefactor train --backend cupy --epochs 10 --no-progress --out "$RUN" 2>&1 \
    | tee -a "$OUT/bench_step_gpu.log" || status=1
  cat "$RUN/metrics.jsonl" >>"$OUT/bench_step_gpu.log" 2>&1
else
  echo "Fashion-MNIST not found here: carry it (see the head of this script)" | tee -a "$OUT/bench_step_gpu.log"
fi

for f in bench_update_gpu bench_step_gpu; do   # Markdown tables for RESULTS.md, appended to the logs
  [ -s "$OUT/$f.json" ] && "$PY" -m threefactor bench --summary "$OUT/$f.json" >>"$OUT/$f.log" 2>&1
done
if [ -s "$OUT/bench_update_gpu.json" ]; then   # the speed targets judged on this run (RESULTS "Targets at a glance")
  { echo "== targets"; "$PY" -m threefactor bench --targets "$OUT/bench_update_gpu.json"; } \
    >>"$OUT/bench_update_gpu.log" 2>&1 || status=1
fi
echo "gpu_check: results in $OUT (status $status)"
exit $status
