#!/usr/bin/env bash
# A real N-day backfill (default 30) against a fresh simulator: own data directory, own Dagster home, wall time, CPU
# time (the backfill's and the simulator's: on a shared machine the wall time mostly measures the neighbours), peak
# memory and the load average. Not part of `make bench`. Usage: benchmarks/backfill_days.sh [DAYS]
# PORT=8811 serves the simulator on that port (default 8799: benchmarks sharing a machine need their own ports).
# DAGSTER_YAML=/path/dagster.yaml uses that instance configuration (benchmarks/backfill_postgres.py: PostgreSQL).
# The simulator keeps the bulk files it builds in SIM_CACHE (default ~/.cache/lsq/simulator-history, `lsq sim serve
# --history-cache`): the first run pays for building them, later runs only read them, as the real site's files
# cost the backfill nothing to make. `SIM_CACHE= ` (empty) builds every file afresh.
set -euo pipefail
days=${1:-30}
cd "$(dirname "$0")/.."
work=$(mktemp -d -t lsq-backfill-XXXX)
port=${PORT:-8799}
start=$(date -u -d "-$days days" +%F)
end=$(date -u +%F)
partitions_start=$(date -u -d "-$((days + 1)) days" +%F)
mkdir -p "$work/dagster_home"
[ -n "${DAGSTER_YAML:-}" ] && cp "$DAGSTER_YAML" "$work/dagster_home/dagster.yaml"
cat > "$work/lsq.yaml" <<YAML
data:
  data_dir: $work/data
  partitions_start: "$partitions_start"
binance:
  mock:
    rest_url: http://127.0.0.1:$port
    ws_url: ws://127.0.0.1:$port
    data_url: http://127.0.0.1:$port/data
YAML
export LSQ_CONFIG="$work/lsq.yaml" DAGSTER_HOME="$work/dagster_home"
cache=${SIM_CACHE-${XDG_CACHE_HOME:-$HOME/.cache}/lsq/simulator-history}
sim_args=(--port "$port" --symbols 40 --rate-limit-multiplier 20)
if [ -n "$cache" ]; then
  sim_args+=(--history-cache "$cache")
  echo "simulator history cache: $cache ($(find "$cache" -name '*.zip' 2>/dev/null | wc -l) files before the run)"
fi
.venv/bin/lsq sim serve "${sim_args[@]}" > "$work/simulator.log" 2>&1 &
sim=$!
trap 'kill $sim; echo "data and logs kept in $work"' EXIT
sleep 5
timer=()
[ -x /usr/bin/time ] && timer=(/usr/bin/time -f "wall %e s, cpu %U s user + %S s sys, peak RSS %M KiB")
echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
SECONDS=0
"${timer[@]}" .venv/bin/lsq backfill --start "$start" --end "$end" 2>&1 \
  | grep -a -E "^lsq backfill: [0-9]|^wall|failed"
echo "backfill of $days day(s): $SECONDS s in all; simulator cpu $(ps -o times= -p $sim | tr -d ' ') s;" \
  "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
