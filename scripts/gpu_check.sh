#!/usr/bin/env bash
# The checks that need a GPU, in one prepared run (issues #11, #14, #15, #26): for a lent device,
# where only PyTorch and common ML packages are installed (sagan_core needs nothing else).
#
#   scripts/gpu_check.sh                      # tests bench eval (not yet timed on a GPU)
#   scripts/gpu_check.sh tests quality ddp    # any of: tests bench eval quality ddp worker
#   STEPS=10 SIZES=32x64 scripts/gpu_check.sh bench
#   LIMIT_bench=150 DDP_SIZES=32x64 scripts/gpu_check.sh ddp bench   # a stage's seconds at most
#
# Everything printed is also written under $OUT (or ./gpu-check): the tables go in the closing
# note with the GPU they ran on (gpu.txt). `eval` needs torch-fidelity, which such a device may
# lack: carry it as a wheel in .whl (pip download --no-deps torch-fidelity -d .whl); wheels
# found there are installed into /tmp/site first.
set -uo pipefail
out=${OUT:-gpu-check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
    $python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
stages=${*:-tests bench eval}
status=0
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi"; } | tee "$out/gpu.txt"
$python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" |
    tee -a "$out/gpu.txt"

# Each stage runs under its own limit (LIMIT_<stage> seconds, 600 unless set), so one that hangs
# or compiles for too long leaves the lease's minutes to the stages after it.
limited() {
    local var="LIMIT_$stage"
    timeout -k 5 "${!var:-600}" "$@"
}

for stage in $stages; do
    v="LIMIT_$stage"; echo "=== $stage (at most ${!v:-600} s)"
    started=$SECONDS
    case $stage in
    tests) # the fast path's step on CUDA against plain; CUDA graphs without skips (#14);
        # the GPU figures in a train job's metrics (#24: nvidia-ml-py, carried in .whl, for NVML's)
        limited $python -m pytest -q -p no:cacheprovider --noconftest tests/core/test_gpu_stats.py \
            tests/core/test_fast_path_cuda.py 2>&1 | tee "$out/tests.txt" ;;
    bench) # plain, bf16, fast and fast + CUDA graphs at the issue's three sizes (#14)
        limited $python -m sagan_core.bench train --steps "${STEPS:-20}" --warmup 3 ${SIZES:+--sizes "$SIZES"} \
            2>&1 | tee "$out/bench.md" ;;
    eval) # 50,000-sample IS + FID beside torch-fidelity's pipeline (#14). No network there:
        # Inception with random weights times the same work (the weights' values cost nothing).
        weights=${INCEPTION_WEIGHTS:-}
        if [ -z "$weights" ]; then
            weights=/tmp/inception-random.pth
            $python -c "import sys; sys.path.insert(0, 'tests'); from pathlib import Path; \
from random_inception import save_random_inception; save_random_inception(Path('$weights'))"
        fi
        limited $python -m sagan_core.bench eval --inception-weights "$weights" --samples "${SAMPLES:-50000}" \
            2>&1 | tee "$out/bench_eval.md" ;;
    quality) # the paper preset on digits must not collapse (#11): 10,000 steps
        limited $python -m sagan_core.bench quality --set preset=paper --set device=cuda \
            --grid "$out/paper.png" 2>&1 | tee "$out/quality.md" ;;
    worker) # a few fast-path steps through the worker's entry point (#26); needs the service's
        # packages: carry their wheels in .whl (pip download -d .whl -r <(pip freeze))
        limited $python scripts/gpu_worker_step.py 2>&1 | tee "$out/worker.txt" ;;
    ddp) # DDP overhead on 1 GPU and scaling over every visible GPU (#15)
        limited $python -m sagan_core.bench ddp ${DDP_SIZES:+--sizes "$DDP_SIZES"} 2>&1 | tee "$out/bench_ddp.md" ;;
    *) echo "unknown stage $stage (tests bench eval quality ddp worker)" >&2; status=2; continue ;;
    esac
    rc=$?
    echo "=== $stage: rc $rc in $((SECONDS - started)) s$([ $rc -eq 124 ] && echo ' (its limit)')"
    [ $rc -ne 0 ] && status=1
done
exit $status
