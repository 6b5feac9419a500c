#!/usr/bin/env bash
# A real N-day backfill (default 30) against a fresh simulator: own data directory, own Dagster home, wall time and
# peak memory. Not part of `make bench` (30 days take ~16 minutes on 2 cores). Usage: benchmarks/backfill_days.sh [DAYS]
set -euo pipefail
days=${1:-30}
cd "$(dirname "$0")/.."
work=$(mktemp -d -t lsq-backfill-XXXX)
port=8799
start=$(date -u -d "-$days days" +%F)
end=$(date -u +%F)
partitions_start=$(date -u -d "-$((days + 1)) days" +%F)
mkdir -p "$work/dagster_home"
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
.venv/bin/lsq sim serve --port "$port" --symbols 40 --rate-limit-multiplier 20 > "$work/simulator.log" 2>&1 &
sim=$!
trap 'kill $sim; echo "data and logs kept in $work"' EXIT
sleep 5
timer=()
[ -x /usr/bin/time ] && timer=(/usr/bin/time -f "wall %e s, peak RSS %M KiB")
SECONDS=0
"${timer[@]}" .venv/bin/lsq backfill --start "$start" --end "$end" 2>&1 \
  | grep -a -E "^lsq backfill: [0-9]|^wall|failed"
echo "backfill of $days day(s): $SECONDS s in all"
