#!/usr/bin/env bash
# Ingest rate with forwarding to a webhook enabled (the figure in docs/BENCHMARKS.md):
# token publishes on 5683 (durable store) with no rule, then with a webhook
# rule matching every uplink; afterwards, how fast the rule drained its lag.
# Gateway pinned to core 0 (GOMAXPROCS=1), generator and webhook receiver on
# core 1. Usage: bash bench/forward.sh [duration, default 10s]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
trap bench_cleanup EXIT
DUR=${1:-10s}
bench_build
go build -o "$BIN/hooksink" ./bench/hooksink
hookport=$(free_port)
(exec taskset -c "${CLIENT_CPU:-1}" "$BIN/hooksink" --listen 127.0.0.1:$hookport) &
BENCH_PIDS+=($!)
wait_tcp "$hookport"
start_gateway fwd
export COAPGATE_API_URL=$GW_API COAPGATE_API_KEY=$GW_KEY
r=$BENCH_TMP/fwd
echo "== no rule: token publish, durable store, $DUR"
bench_dev $(gw_args token) --duration "$DUR" --json >"$r-base.json"
echo "== webhook rule on every uplink: token publish, $DUR"
cat >"$r-rule.json" <<JSON
{"name":"bench-hook","topicFilter":"/sys/#","actions":[{"type":"webhook","url":"http://127.0.0.1:$hookport/hook","secret":"bench"}]}
JSON
rid=$("$BIN/coapgate" rule create --file "$r-rule.json" --json | sed -n 's/.*"id": *"\{0,1\}\([^",]*\)"\{0,1\},.*/\1/p' | head -1)
t0=$(date +%s.%N)
bench_dev $(gw_args token) --duration "$DUR" --json >"$r-hook.json"
t1=$(date +%s.%N)
# Drain: wait until the webhook has every uplink of the second run.
want=$(jget "$r-hook.json" ok)
for _ in $(seq 1 600); do
	got=$(curl -fsS "http://127.0.0.1:$hookport/count" | cut -d' ' -f2)
	[ "$got" -ge "$want" ] && break
	sleep 0.1
done
t2=$(date +%s.%N)
python3 - "$r-base.json" "$r-hook.json" "$got" "$t0" "$t1" "$t2" <<'PY'
import json,sys
b,h=json.load(open(sys.argv[1])),json.load(open(sys.argv[2]))
got,t0,t1,t2=int(sys.argv[3]),*map(float,sys.argv[4:7])
print(f"{'run':<28}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
for name,d in (("no rule",b),("webhook rule",h)):
    errs=sum(d.get('errors',{}).values()) if isinstance(d.get('errors'),dict) else d.get('errors',0)
    print(f"{name:<28}{d.get('reqPerSec',0):>10.0f}{d['latencyMs']['p50']:>9.2f}{d['latencyMs']['p99']:>9.2f}{errs:>8}")
print(f"webhook: {got} distinct uplinks delivered of {h.get('ok')} acknowledged; all delivered {t2-t0:.1f}s after the run started ({got/(t2-t0):.0f}/s end to end)")
PY
