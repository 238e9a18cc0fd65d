#!/usr/bin/env bash
# bench/idle-dtls.sh [N] [HOLD]: server RSS growth per idle DTLS session
# at N sessions (default 100,000), all checked to still answer afterwards.
# The gateway runs pinned (GOMAXPROCS=1 taskset -c 0), the generator (coapdev dtls-load --park) on
# core 1 gives each session its own source address (127.0.0.2-127.0.0.3,
# ports 10000-59999) and keeps only a snapshot of each session, so neither
# side needs thousands of sockets. RSS is read once every session is up and
# idle: 45 s later, after each session has dropped its finished handshake's
# last flight (kept dtls.handshake_timeout, 30 s, for retransmission) and
# its expanded cipher (engine CipherCacheIdle, 10 s); then every session is
# resumed and must answer one confirmable publish. BENCH_HEAP=FILE saves
# the gateway's heap profile (api.pprof_listen) taken with that GC.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
trap bench_cleanup EXIT
N=${1:-100000} HOLD=${2:-120s}
bench_build
PPROF=127.0.0.1:$(free_port)
COAPGATE_API_PPROF_LISTEN=$PPROF COAPGATE_DTLS_MAX_SESSIONS=$((N * 2)) start_gateway idle
COAPGATE_API_URL=$GW_API COAPGATE_API_KEY=$GW_KEY "$BIN/coapgate" device create "$GW_PK" dev1 --secret devsecret1 >/dev/null
export COAPDEV_PRODUCT=$GW_PK COAPDEV_DEVICE=dev1 COAPDEV_SECRET=devsecret1
rss() { awk '/VmRSS/{print $2}' "/proc/$GW_PID/status"; } # kB
metric() { curl -s "$GW_API/metrics" | awk -v m="$1" '$1==m{print $2}'; }
pin_client "$BIN/coapdev" dtls-load --server "$GW_DTLS" --sessions 200 --concurrency 64 --close # warm-up
r0=$(rss)
LOADLOG=$BENCH_TMP/load.log
pin_client "$BIN/coapdev" dtls-load --server "$GW_DTLS" --sessions "$N" --concurrency 64 \
	--park --src-ips 127.0.0.2-127.0.0.3 --hold "$HOLD" --timeout 30s > >(tee "$LOADLOG") 2>&1 &
LOAD=$!
BENCH_PIDS+=("$LOAD")
# Every handshake done: the generator holds its sessions. A source port
# another process holds on the machine fails that one session (reported
# by the generator); the figures are per session actually established.
until grep -q '^holding' "$LOADLOG" 2>/dev/null; do
	kill -0 "$LOAD" 2>/dev/null || { echo "generator ended before holding its sessions" >&2; exit 1; }
	sleep 2
done
sleep 45
EST=$(metric coapgate_dtls_sessions)
# A forced GC (the heap profile's gc=1) ends the handshake phase's garbage;
# the runtime's scavenger then returns the freed pages within seconds.
curl -s -o "${BENCH_HEAP:-/dev/null}" "http://$PPROF/debug/pprof/heap?gc=1"
sleep 10
r1=$(rss)
heap=$(metric go_memstats_heap_alloc_bytes)
echo "sessions=$EST (of $N) rss0=${r0}kB rss=${r1}kB growth/session=$(( (r1 - r0) * 1024 / EST ))B heap_live=${heap}B heap/session=$(python3 -c "print(int(float('$heap')/$EST))")B"
# The generator exits non-zero when a session failed; its report (above)
# says why, and the server's counters follow.
wait "$LOAD" || echo "generator reported failed sessions (see its report above)"
BENCH_PIDS=("$GW_PID")
echo "sessions after the check: $(metric coapgate_dtls_sessions); rejected records:"
curl -s "$GW_API/metrics" | grep '^coapgate_dtls_records_rejected_total'
