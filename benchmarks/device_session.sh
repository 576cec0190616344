#!/usr/bin/env bash
# Everything this project measures on a lent GPU, in one call that fits a 15-minute device session:
# the CUDA checks CI cannot run, then the training step (issue 4's target), each part time-boxed so one slow
# part cannot eat the others. Results land in $OUT (at most 8 files, as the device tool returns them).
#
#   bash benchmarks/device_session.sh     # from the repository root; OUT defaults to /tmp/is5net-device
#
# The parts are capped at 90 + 270 + 200 s: under the device tool's 10-minute command limit, with the
# machine's start, inside 15 minutes of device time.
#
# Wheels the GPU machine lacks (segment-anything, pysodmetrics) may be put in .whl/ beforehand: they are
# installed into /tmp/site, which goes first on PYTHONPATH.
set -u
OUT=${OUT:-/tmp/is5net-device}
mkdir -p "$OUT"
export PYTHONPATH=src PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl && export PYTHONPATH=/tmp/site:src
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c \
    "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"; } \
    > "$OUT/machine.txt" 2>&1

part() {  # part NAME SECONDS COMMAND...: run one part, keep its output, note how it ended
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
    echo "$name: exit $? after $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
}

part gpu_check 90 python3 benchmarks/gpu_check.py
part train 270 python3 benchmarks/bench_train.py --variants plain,ours_v1,ours --workers 8 --data-size 2560 \
    --json "$OUT/train.json"
# What loop.py could add next: cuDNN autotuning (ours_tuned) and torch.compile, against plain in the same run.
part train_more 200 python3 benchmarks/bench_train.py --variants plain,ours_tuned --compile --skip-data \
    --json "$OUT/train_more.json"
