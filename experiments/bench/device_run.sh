#!/usr/bin/env bash
# One prepared run on a GPU machine (the device tool): GPU benchmarks + GPU tests, results in $OUT.
#   bash experiments/bench/device_run.sh            (SMALL=1 for a quick plumbing check)
# Real data travels only inside the checkout: before calling the device tool, copy what the backtest
# benchmark reads into ./shared (ignored by git; the device tool carries shared/), e.g.
#   mkdir -p shared/data/binance/usdm && cp ../shared/data/binance/usdm/btcusdt_20240808.gz shared/data/binance/usdm/
# (not its MANIFEST.md: with it the tests take the partial copy for the whole data set and fail on the files it
# lacks, as 7 real-data tests did on 2026-11-27; without it they skip)
# and, to spare the device the CPU ingest's JIT compile (about a minute), the prepared recording:
#   python experiments/bench/bench_backtest_gpu.py --source binance --backend cpu --sets 8 --variants t0s1 \
#     --market-cache "$PWD/shared/market_usdm.pkl.gz"       (written when missing; read when present)
# The package is laid out under /tmp/pp (gpuflow + gpuflow.kernels/dashboards/live) so nothing is
# installed and no network is needed; commands run from /tmp/pp so the checkout's folders do not shadow it.
#
# Order: the backtest benchmark starts at once in the background (its JIT compile of the sweep kernel
# takes minutes of CPU) and waits before timing anything until the book benchmark has finished, so the
# two never share the GPU while timed; the tests (side by side) run last.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-/tmp/gpuflow-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 GPUFLOW_PROGRESS=0
PY=${PY:-python3}
rm -rf /tmp/pp && mkdir -p /tmp/pp
cp -r "$REPO/gpuflow" /tmp/pp/ && cp -r "$REPO/kernels" /tmp/pp/gpuflow/kernels \
  && cp -r "$REPO/dashboards" /tmp/pp/gpuflow/dashboards && cp -r "$REPO/live" /tmp/pp/gpuflow/live
export PYTHONPATH=/tmp/pp
cd /tmp/pp
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1; nproc;
  $PY -c "import numpy, numba, pyarrow; print('numpy', numpy.__version__, 'numba', numba.__version__, 'pyarrow', pyarrow.__version__)";
  $PY -c "import cupy; print('cupy', cupy.__version__)" 2>&1;
  $PY -c "import numba_cuda; print('numba-cuda', numba_cuda.__version__)" 2>&1; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

if [ "${SMALL:-0}" = 1 ]; then
  BENCH_ARGS="--events 4000 --batch 2000 --cpu-events 1000 --stream-threads 64 --reps 1 --configs every1_ofi,every64_ofi@4000 --chunks 64 --layouts 100,101,102,1021,1021r112,011,w1"
  TEST_SEL="tests/kernels/test_book_kernels.py tests/test_book_warp.py"
  BT_ARGS="--small"
else
  # Timed on the H200 on 2026-11-27 16:06 UTC (BENCHMARKS.md): the default 1021 (staged rows, int32 sizes) at
  # chunks of 4096: 2.46e9 events/s every event; chunks of 2048 and the 112-register cap gained nothing; every 64th
  # event 1001 (direct rows) in 2e8-event batches 5.20e9. The warp replay (w1) gave wrong rows there (lane masks
  # read as signed int32; fixed in commit 50481c1): its first correct timing is next, at one wave of warps (auto)
  # and at two (8448), against 1021 every event and 1001 every 64th. Every event in 2e8-event batches (twice the
  # chunks, 12 warps per SM instead of 6) is untimed; every 64th event it gained 1.29x.
  BENCH_ARGS=${BENCH_ARGS:-"--events 1e9 --batch 1e8 --cpu-events 2e7 --chunks 4096 --layouts 1021,1001,w1 --warps auto,8448 --threads 64 --configs every1_ofi,every1_ofi@2e8,every64_ofi@2e8"}
  TEST_SEL=${TEST_SEL:-"tests/test_book_gpu.py tests/test_book_warp.py tests/test_book.py tests/kernels/test_book_kernels.py tests/test_book_properties.py tests/features tests/test_backend.py tests/backtest/test_engine.py::test_device_arrays_are_cached_per_market_not_shared_with_its_copies"}
  # sweep: flat 0.31-0.33 s from 1,000 to 50,000 sets and 0.45 s at 100,000 on the H200 (2026-11-27, uncapped, the
  # default since then). Untimed: the coalesced equity samples (commit 10a1a65, in every variant), event tiles of
  # 128 with block skipping (t128s1: 98 registers by ptxas here since the block checks read their columns first),
  # the occupancy probe (the same 32 sets in every warp at 1, 4 and 16 warps per SM: does a walk slow down when more
  # warps share an SM?), skip blocks of 8 and 4 events (k8, k4) and levels of skip blocks (l2, l3: blocks of 4, 16
  # and 64 events). Counted on the CPU box (rows 0-7 of the bench grid, BENCHMARKS.md): per set 206,606 events
  # walked and 46,766 block checks in blocks of 16 (the default); 108,765 walked in blocks of 4, with 160,260
  # checks at one level, 106,681 at two, 104,933 at three; in blocks of 8 at two levels 145,553 and 69,616
  BT_DEFAULT="--sets 1000,50000,100000 --variants t0s1,t0s1k4l3,t0s1k4l2,t0s1k8l2,t128s1,t128s1k4l3,t0s1k4 --occupancy-probe 1,4,16"
  BT_ARGS="--time-budget ${BT_BUDGET:-285} ${BT_EXTRA:-$BT_DEFAULT}"
  if [ -f "$REPO/shared/market_usdm.pkl.gz" ]; then BT_ARGS="$BT_ARGS --market-cache $REPO/shared/market_usdm.pkl.gz"; fi
fi
DONE=/tmp/gpuflow-book-bench-done
rm -f "$DONE"

BT_PID=
if [ "${SKIP_BT:-0}" != 1 ]; then
  echo "== GPU benchmark: backtest sweep engine (background; times nothing before the book benchmark ends)"
  ( timeout "${BT_TIMEOUT:-300}" $PY "$REPO/experiments/bench/bench_backtest_gpu.py" $BT_ARGS --wait-for "$DONE" \
      --json-out "$OUT/bench_backtest_gpu.json" --dump-dir "$OUT/cubin" > "$OUT/bench_backtest_gpu.txt" 2>&1
    echo "bench exit: $?" >> "$OUT/bench_backtest_gpu.txt" ) &
  BT_PID=$!
fi

if [ "${SKIP_BOOK:-0}" != 1 ]; then
  echo "== GPU benchmark: book rebuild + top-5 + OFI"
  timeout "${BENCH_TIMEOUT:-200}" $PY "$REPO/experiments/bench/bench_book_gpu.py" $BENCH_ARGS \
    --json-out "$OUT/bench_book_gpu.json" > "$OUT/bench_book_gpu.txt" 2>&1
  echo "bench exit: $?" >> "$OUT/bench_book_gpu.txt"
  grep -v '^{' "$OUT/bench_book_gpu.txt" | cut -c1-400 | tail -40
fi
touch "$DONE"
if [ -n "$BT_PID" ]; then
  wait "$BT_PID"
  grep -v '^{' "$OUT/bench_backtest_gpu.txt" | cut -c1-400 | tail -20
fi

# The two GPU test suites check results only (nothing timed), so they run side by side: the book tests
# and the backtest tests (sweep engine == exact engine for every strategy on the device, one engine
# kernel compile per strategy, a few seconds each at NVVM -O1). -v: a run stopped by its timeout still
# shows which tests passed and failed.
# PROFILE=1: Nsight Compute reports of one sweep-engine launch per variant (PROFILE_VARIANTS; PROF_SETS sets,
# default 100,000: the size the 100x target is judged at, where the sets' thread-local state (6.8 KB each) no
# longer fits L1/L2; the 2026-11-26 profile ran 4,096) and of the
# book's prepare, summarise and replay kernels (every event, 1e8 events: the headline case), after the benchmarks and before the tests, alone
# on the GPU (on 2026-11-27 16:21 UTC the sweep's profile beside 16 test processes did not finish its first of about
# 25 passes in 110 s). Reports in $OUT/ncu_*.txt; the sweep's per SASS instruction in $OUT/ncu_sweep_sass.csv.gz.
if [ "${PROFILE:-0}" = 1 ]; then
  NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  # speed of light, occupancy, memory, source counters (--set detailed), and the stall reasons and the
  # scheduler's issue rate (not in that set with the ncu of 2026-11-27)
  SECTIONS=${NCU_SECTIONS:-"--set detailed --section WarpStateStats --section SchedulerStats"}
  echo "== ncu profiles ($NCU)"
  ( V=${PROFILE_VARIANTS:-t0s1}
    # the sweep's report is kept, then printed twice: its sections, and per SASS instruction (stall samples by
    # reason, executed instructions; CSV, for reading here)
    timeout "${PROF_TIMEOUT:-240}" "$NCU" $SECTIONS -f -o /tmp/ncu_sweep -k regex:run_cuda \
      --launch-count "$(echo "$V" | tr ',' '\n' | wc -l)" \
      $PY "$REPO/experiments/tools/profile_gpu.py" sweep --sets "${PROF_SETS:-100000}" --events "${PROF_EVENTS:-1e5}" \
      --variant "$V" --reps 1 > "$OUT/ncu_sweep.txt" 2>&1
    echo "ncu exit: $?" >> "$OUT/ncu_sweep.txt"
    "$NCU" -i /tmp/ncu_sweep.ncu-rep --page details >> "$OUT/ncu_sweep.txt" 2>&1
    "$NCU" -i /tmp/ncu_sweep.ncu-rep --page source --csv --print-source sass 2>&1 | gzip > "$OUT/ncu_sweep_sass.csv.gz"
    [ "${PROF_BOOK:-1}" = 1 ] || exit 0
    timeout "${PROF_BOOK_TIMEOUT:-90}" "$NCU" $SECTIONS -f -o /tmp/ncu_book -k regex:"prepare_cuda|summarise_cuda|replay" \
      --launch-count 3 \
      $PY "$REPO/experiments/tools/profile_gpu.py" book --events "${PROF_BOOK_EVENTS:-1e8}" --every "${PROF_BOOK_EVERY:-1}" \
      --reps 1 > "$OUT/ncu_book.txt" 2>&1
    echo "ncu exit: $?" >> "$OUT/ncu_book.txt"
    "$NCU" -i /tmp/ncu_book.ncu-rep --page details >> "$OUT/ncu_book.txt" 2>&1
    "$NCU" -i /tmp/ncu_book.ncu-rep --page source --csv --print-source sass 2>&1 | gzip > "$OUT/ncu_book_sass.csv.gz"
    # the warp replay's summary and replay kernels (PROF_WARP=0 to skip)
    if [ "${PROF_WARP:-1}" = 1 ]; then
      timeout "${PROF_BOOK_TIMEOUT:-90}" "$NCU" $SECTIONS -k regex:"summarise_warp|replay_warp" --launch-count 2 \
        $PY "$REPO/experiments/tools/profile_gpu.py" book --replay warp --events "${PROF_BOOK_EVENTS:-1e8}" \
        --every "${PROF_BOOK_EVERY:-1}" \
        --reps 1 > "$OUT/ncu_book_warp.txt" 2>&1
      echo "ncu exit: $?" >> "$OUT/ncu_book_warp.txt"
    fi )
  tail -n 3 "$OUT"/ncu_*.txt
fi

# BISECT=1: which kernel launch first differs from its CPU twin on the same inputs (experiments/tools/kernel_bisect.py),
# for each case of BISECT_CASES (';'-separated argument lists); JSON in $OUT/bisect_N.json, and for the first case
# (small: its arrays travel back) the inputs and outputs of every differing launch in $OUT/kb_0/
BISECT_PID=
if [ "${BISECT:-0}" = 1 ]; then
  echo "== kernel bisect"
  ( IFS=';' read -ra CASES <<< "${BISECT_CASES:-book-test --seed 7 --levels 7 --every 4 --chunk 5;book --events 2e5 --seed 6 --every 1}"
    for i in "${!CASES[@]}"; do
      timeout "${BISECT_TIMEOUT:-120}" $PY "$REPO/experiments/tools/kernel_bisect.py" ${CASES[$i]} \
        $([ "$i" = 0 ] && echo --save-dir "$OUT/kb_0") > "$OUT/bisect_$i.json" 2> "$OUT/bisect_$i.err"
      echo "bisect $i (${CASES[$i]}) exit: $?"
    done ) &
  BISECT_PID=$!
fi

BOOK_TESTS=
if [ "${SKIP_BOOK_TESTS:-0}" != 1 ]; then
  echo "== GPU tests ($TEST_SEL)"
  # CUDA_LAUNCH_BLOCKING=1: a failing kernel is reported at its own launch, not at a later one
  ( CUDA_LAUNCH_BLOCKING=1 GPUFLOW_TEST_GPU=${GPUFLOW_TEST_GPU:-1} timeout "${TEST_TIMEOUT:-150}" $PY -m pytest -v -p no:cacheprovider -p no:benchmark ${BOOK_TEST_WORKERS:+-n $BOOK_TEST_WORKERS} \
    -W "ignore::DeprecationWarning" -W "ignore::FutureWarning" -m "gpu or not gpu" --tb=short -rfE \
    $(for t in $TEST_SEL; do echo "$REPO/$t"; done) > "$OUT/tests.txt" 2>&1
    echo "pytest exit: $?" >> "$OUT/tests.txt" ) &
  BOOK_TESTS=$!
fi
if [ "${SKIP_BT_TESTS:-0}" != 1 ] && [ "${SMALL:-0}" != 1 ]; then
  echo "== GPU tests (${BT_TEST_SEL:=tests/backtest/test_engine.py tests/backtest/test_strategies.py tests/backtest/test_execution.py tests/backtest/test_skip_blocks.py})"
  # each GPU test compiles its own engine kernel (CPU-bound, 10-20 s): spread over processes, with
  # pytest-xdist where the machine has it (the H200 / H100 machines did on 2026-11-27), else one pytest per
  # file side by side
  if $PY -c "import xdist" 2>/dev/null; then
    GPUFLOW_TEST_GPU=1 timeout "${BT_TEST_TIMEOUT:-240}" $PY -m pytest -v -p no:cacheprovider -p no:benchmark -n "${BT_TEST_WORKERS:-12}" \
      -W "ignore::DeprecationWarning" -W "ignore::FutureWarning" --tb=short -rfE \
      $(for t in $BT_TEST_SEL; do echo "$REPO/$t"; done) > "$OUT/tests_backtest.txt" 2>&1
    echo "pytest exit: $?" >> "$OUT/tests_backtest.txt"
  else
    BT_LOGS= BT_PIDS=
    for t in $BT_TEST_SEL; do
      LOG=/tmp/bt_$(basename "$t" .py).txt; BT_LOGS="$BT_LOGS $LOG"
      ( GPUFLOW_TEST_GPU=1 timeout "${BT_TEST_TIMEOUT:-240}" $PY -m pytest -v -p no:cacheprovider -p no:benchmark \
        -W "ignore::DeprecationWarning" -W "ignore::FutureWarning" --tb=short -rfE "$REPO/$t" > "$LOG" 2>&1
        echo "pytest exit ($t): $?" >> "$LOG" ) &
      BT_PIDS="$BT_PIDS $!"
    done
    wait $BT_PIDS
    cat $BT_LOGS > "$OUT/tests_backtest.txt"
  fi
fi
# the cubins travel back as one file (the device tool returns at most 8)
if [ -d "$OUT/cubin" ]; then tar -czf "$OUT/cubin.tar.gz" -C "$OUT" cubin && rm -rf "$OUT/cubin"; fi
[ -n "$BOOK_TESTS" ] && wait "$BOOK_TESTS" && grep -E "FAILED|ERROR|passed|failed|pytest exit" "$OUT/tests.txt" | tail -30
[ -n "$BISECT_PID" ] && wait "$BISECT_PID"
[ -f "$OUT/tests_backtest.txt" ] && grep -E "FAILED|ERROR|passed|failed|pytest exit" "$OUT/tests_backtest.txt" | tail -20
exit 0
