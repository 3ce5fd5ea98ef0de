#!/bin/bash
# One device session in the background (start it with `setsid nohup bash bench/device/session.sh &` in the
# call that installs the rig, then poll with bench/device/poll.sh): GPU tests in order of priority, then the
# benchmarks. Each step is bounded; failures are written as they happen (tests/conftest.py), so a session
# cut off at its time limit still says what failed. Progress in /tmp/run/progress.
set -u
source /tmp/devrig/env.sh
export ORCHESTRATOR_CACHE=/tmp/orch-cache ORCHESTRATOR_FAILURE_LOG=/tmp/run/failures.log
R=/tmp/run; mkdir -p $R
step() { local name=$1 limit=$2; shift 2
  echo "$(date +%T) start $name" >> $R/progress
  timeout -s INT $limit "$@" > $R/$name.log 2>&1; local rc=$?
  echo "$(date +%T) end $name rc=$rc $(grep -E '[0-9]+ (passed|failed)' $R/$name.log | tail -1)" >> $R/progress; }
# tests build at optimisation level 1 (fast builds, engines still correct); benchmarks at TensorRT's default
tests() { ORCHESTRATOR_TRT_OPT_LEVEL=${TEST_OPT_LEVEL:-1} python -m pytest -m gpu -q -p no:cacheprovider -rfE "$@"; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv > $R/gpu.txt 2>&1
# ${STEPS:-...} picks the steps (names below); the default is all, in this order
for s in ${STEPS:-core precision instances rest bench_precision bench_instances bench_kernels bench_snip}; do
  case $s in
    core)       step core 600 tests tests/test_cuda.py tests/test_cuda_bad_input.py tests/test_cuda_first_hour.py ;;
    precision)  step precision 300 tests tests/test_cuda_precision.py ;;
    instances)  step instances 600 tests tests/test_cuda_instances.py ;;
    rest)       step rest 600 tests tests/test_snip_gpu.py tests/test_fast_kernels.py tests/test_advise.py \
                     tests/test_heatmap.py tests/test_surgery.py ;;
    bench_precision) step bench_precision 330 python bench/precision_paths.py --out bench/results/precision_paths_fp16_b1.json ;;
    bench_instances) step bench_instances 330 python bench/instances.py --out bench/results/instances.json ;;
    bench_kernels)   step bench_kernels 240 python bench/kernels.py --batch 1 32 --network --out bench/results/kernels.json ;;
    bench_snip)      step bench_snip 420 python bench/snip_bench.py --quick --out bench/results/snip_fp16_quick.json ;;
  esac
done
touch $R/done
