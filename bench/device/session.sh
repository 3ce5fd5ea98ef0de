#!/bin/bash
# One device session in the background (start it with `setsid nohup bash bench/device/session.sh &` in the
# call that installs the rig, then poll with bench/device/poll.sh). Three phases:
#   A. the GPU tests spread over pytest-xdist workers (tests are not timed; most of their time is engine
#      builds, which are CPU work); with WARM=1 beside a lane that builds the benchmarks' engines;
#   B. the tests that read device-wide memory use (marker device_memory), alone;
#   C. the benchmarks, one at a time, alone on the GPU.
# Each step is bounded; failures are written as they happen (tests/conftest.py), so a session cut off
# still says what failed. Progress in /tmp/run/progress, results in /tmp/run/results.
set -u
source /tmp/devrig/env.sh
export ORCHESTRATOR_CACHE=/tmp/orch-cache ORCHESTRATOR_FAILURE_LOG=/tmp/run/failures.log
R=/tmp/run; OUTS=$R/results; mkdir -p $OUTS
step() { local name=$1 limit=$2; shift 2
  echo "$(date +%T) start $name" >> $R/progress
  timeout -s INT $limit "$@" > $R/$name.log 2>&1; local rc=$?
  echo "$(date +%T) end $name rc=$rc $(grep -E '[0-9]+ (passed|failed)' $R/$name.log | tail -1)" >> $R/progress; }
# tests build at optimisation level 0 (fastest builds, engines still correct); benchmarks at TensorRT's default.
# (A command, not a shell function: `timeout` runs programs.)
tests="env ORCHESTRATOR_TRT_OPT_LEVEL=${TEST_OPT_LEVEL:-0} python -m pytest -q -p no:cacheprovider -rfE --durations=25"
serve_env() {  # PyTriton's wheels, carried into /tmp/serve-wheels by earlier calls (bench/device/README.md)
  [ -d /tmp/serve-wheels ] || return 1
  [ -f $R/serve-rig.done ] || { bash bench/serve_rig.sh /tmp/serve-wheels > $R/serve-rig.log 2>&1 && touch $R/serve-rig.done; }
  export PYTHONPATH=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'):$PYTHONPATH; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv > $R/gpu.txt 2>&1
serve_env || echo "no PyTriton wheels in /tmp/serve-wheels: the serve test will fail" >> $R/progress
PHASES=${PHASES:-"A B C"}
BENCH=${BENCH:-"precision kernels torch instances serve snip"}  # phase C's benchmarks, in order

if [[ $PHASES == *A* ]]; then
  # every GPU test but those reading device-wide memory, spread over processes (pytest-xdist; worksteal
  # rebalances long snip tests).
  # $TESTS narrows it (e.g. TESTS="tests/test_cuda_bad_input.py tests/test_cuda_precision.py").
  ( step tests 1080 $tests -m "gpu and not device_memory" -n ${WORKERS:-6} --dist worksteal ${TESTS:-} ) &
  # Off unless WARM=1: TensorRT times tactics while it builds, and engines built beside the tests came out
  # slower (bench/README.md, run 8), so benchmark engines are built in phase C, alone.
  [ -z "${WARM:-}" ] || ( for b in $BENCH; do case $b in
    precision) step warm_precision 600 python bench/precision_paths.py --iters 5 --samples 1 --out $OUTS/warm_precision_paths.json ;;
    kernels) step warm_kernels 400 python bench/kernels.py --batch 1 32 --iters 5 --network --out $OUTS/warm_kernels.json ;;
    instances) step warm_instances 300 python bench/instances.py --duration 0.2 --iters 5 --out $OUTS/warm_instances.json ;;
  esac; done ) &
  wait
fi
if [[ $PHASES == *B* ]]; then
  step memory 600 $tests -m "gpu and device_memory"
fi
if [[ $PHASES == *C* ]]; then  # in $BENCH's order (most needed first: a session cut off keeps the earlier figures)
  for b in $BENCH; do case $b in
    precision) step bench_precision 330 python bench/precision_paths.py --out $OUTS/precision_paths_fp16_b1.json ;;
    kernels) step bench_kernels 330 python bench/kernels.py --batch 1 32 --network --out $OUTS/kernels.json ;;
    # torch.compile and CUDA-graph baselines, outside the rig's environment (bench/README.md)
    torch) step bench_torch 420 env -u PYTHONPATH /opt/torch/.venv/bin/python3 bench/torch_baseline.py \
             /tmp/orchestrator-bench/resnet50.npz --batch 1 --precision fp16 --out $OUTS/torch.json ;;
    instances) step bench_instances 400 python bench/instances.py --out $OUTS/instances.json ;;
    serve) step bench_serve 600 python bench/serve_bench.py --seconds 3 --out $OUTS/serve.json ;;
    # cold: each configuration in an empty engine and timing cache (build times from scratch)
    snip) ORCHESTRATOR_BUILD_JOBS=${SNIP_BUILD_JOBS:-4} step bench_snip 900 python bench/snip_bench.py --quick --cold ${SNIP_ARGS:-} \
            --out $OUTS/snip_fp16_quick_cold.json ;;
  esac; done
fi
touch $R/done
