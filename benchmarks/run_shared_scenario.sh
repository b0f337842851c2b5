#!/usr/bin/env bash
# backchannel on the shared benchmark scenario, driven by the shared load client
# (../shared/bench/loadgen.py): a fresh server process per N, as for the Pipecat figures.
# Usage: benchmarks/run_shared_scenario.sh [normal|async_tool] "N1 N2 ..." [duration_s]
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-../.venv/bin/python}
LOADGEN=${LOADGEN:-../../shared/bench/loadgen.py}
SCEN=${1:-normal}; NS=${2:-"1 10 25 50"}; DUR=${3:-60}
PORT=${PORT:-9100}
export BENCH_API_KEY=${BENCH_API_KEY:-bench-key}
mkdir -p results logs
for N in $NS; do
  NAME="${SCEN}_n${N}"
  rm -rf ".bench-server-$N"
  $PY bench_server.py --port "$PORT" --dir ".bench-server-$N" > "logs/${NAME}_server.log" 2>&1 &
  SRV=$!
  for _ in $(seq 1 100); do curl -sf "127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.2; done
  sleep 2   # let the idle server settle before RSS(0)
  $PY "$LOADGEN" run --url "ws://127.0.0.1:$PORT/ws" -n "$N" --duration "$DUR" --scenario "$SCEN" \
      --handshake bench_handshake:handshake --server-pid "$SRV" --label backchannel \
      --out "results/${NAME}.json" > "logs/${NAME}_loadgen.log" 2>&1 || echo "loadgen failed for N=$N"
  kill "$SRV"; wait "$SRV" 2>/dev/null || true
  rm -rf ".bench-server-$N"
  $PY "$LOADGEN" report "results/${NAME}.json" | tail -1
done
