#!/usr/bin/env bash
# bench/cluster.sh [--quick]: coapgate on PostgreSQL + NATS against the
# embedded defaults, and three nodes behind nginx, one generator
# (coapdev bench), every comparison alternated within one run and repeated
# (REPS, default 3) so that ratios hold on a shared machine.
#
# Everything runs privately on free ports: a PostgreSQL 15 cluster
# (initdb in a temporary directory, so pg_stat_database / pg_stat_wal and
# the backends' CPU are this benchmark's alone), a NATS server with
# JetStream, nginx (stream module), the gateways.
#
#   single-*  one node, GOMAXPROCS=1 taskset -c 0, generator taskset -c 1
#             (PostgreSQL and NATS unpinned: they take what they need from
#             either core); per repetition, order
#             alternated: "lite" (SQLite, the embedded default) and "pg"
#             (store.driver postgres + cluster.nats_url), and "pgmiss" (the same
#             with auth.device_cache_ttl 0: every request reads the device from
#             PostgreSQL, as for devices reporting less often than the cache
#             TTL or beyond auth.device_cache_entries; up and rate runs only):
#               up    token publish, CON, closed loop (32 sockets, 256 outstanding)
#               rateR token publish, open loop at R req/s (RATES, default 500 3000)
#               hs    full DTLS-PSK handshakes/s (CCM_8, 32 in parallel)
#   lb-*      behind nginx (hash $remote_addr), nodes GOMAXPROCS=1 each,
#             nothing pinned (3 nodes + PostgreSQL + nginx + generator share
#             the 2 cores); the generator's 32 sockets come from 32 source
#             addresses (127.0.0.10-41), nginx as in docs/deployment.md
#             (hash $remote_addr consistent, reuseport), alternated:
#               1node   nginx → n1
#               3nodes  nginx → n1, n2, n3
#
# For each run: the generator's report, the stored uplinks (gateway
# metrics), CPU seconds of the gateways, PostgreSQL (all backends), nginx
# and the generator from /proc, PostgreSQL transactions and WAL
# (pg_stat_database, pg_stat_wal), NATS messages (/varz). Prints a table
# per run and the medians; writes bench/results/cluster-<time>.json, and
# pg_waldump --stats=record of the first PostgreSQL closed-loop run (WAL by
# record type) to bench/results/cluster-<time>-wal.txt.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"

D=10s W=2s REPS=${REPS:-3} RATES=${RATES-500 3000}
# MISS_ENV: how the "pgmiss" node misses its device cache (e.g.
# COAPGATE_AUTH_DEVICE_CACHE_ENTRIES=16: an LRU smaller than the 32 devices);
# HANDSHAKES=0 skips the handshake runs; LB=0 skips phase 2.
MISS_ENV=${MISS_ENV:-COAPGATE_AUTH_DEVICE_CACHE_TTL=0} HANDSHAKES=${HANDSHAKES:-1} LB=${LB:-1}
if [ "${1:-}" = "--quick" ]; then D=3s W=1s REPS=${REPS_QUICK:-1}; fi
GEN=(--sockets 32 --outstanding 256 --payload-size 64 --duration "$D" --warmup "$W" --json --quiet)
PGBIN=/usr/lib/postgresql/15/bin
NGINX_MOD=/usr/lib/nginx/modules/ngx_stream_module.so
for t in "$PGBIN/initdb" /usr/sbin/nats-server nginx psql "$NGINX_MOD"; do
	[ -e "$t" ] || command -v "$t" >/dev/null || { echo "cluster.sh needs $t (postgresql-15, nats-server, nginx + libnginx-mod-stream)" >&2; exit 1; }
done

PGDIR=$(mktemp -d /tmp/coapgate-benchpg.XXXXXX) # owned by postgres: not under BENCH_TMP (0700 root)
cleanup() {
	set +e
	bench_cleanup
	[ -n "${PG_PID:-}" ] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDIR/data" -m immediate stop >/dev/null 2>&1
	rm -rf "$PGDIR"
}
trap cleanup EXIT
bench_build
R=$BENCH_TMP/r
mkdir -p "$R"

# --- private PostgreSQL, NATS -------------------------------------------------
PG_PORT=$(free_port)
chown postgres "$PGDIR"
runuser -u postgres -- "$PGBIN/initdb" -D "$PGDIR/data" -A trust -U postgres >"$PGDIR/initdb.log" 2>&1
# Defaults but for the socket directory and max_connections (room for every
# node's pool, listener and lease connections).
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/pg.log" -w -t 120 \
	-o "-p $PG_PORT -k $PGDIR -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
PG_PID=$(head -1 "$PGDIR/data/postmaster.pid")
psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -qc 'create database coapgate' >/dev/null
PGURL="postgres://postgres@127.0.0.1:$PG_PORT/coapgate?sslmode=disable"

NATS_PORT=$(free_port) NATS_MON=$(free_port)
mkdir -p "$BENCH_TMP/nats"
/usr/sbin/nats-server -a 127.0.0.1 -p "$NATS_PORT" -m "$NATS_MON" -js -sd "$BENCH_TMP/nats" >"$BENCH_TMP/nats.log" 2>&1 &
NATS_PID=$!
BENCH_PIDS+=("$NATS_PID")
wait_owned "$NATS_PID" tcp "$NATS_PORT"

# --- nodes on PostgreSQL -------------------------------------------------------
TOKEN_KEY=$(openssl rand -hex 32)
PG_ENV=(COAPGATE_STORE_DRIVER=postgres "COAPGATE_STORE_POSTGRES_URL=$PGURL"
	"COAPGATE_STORE_SECRET_KEY_FILE=$BENCH_TMP/secret.key" "COAPGATE_AUTH_TOKEN_KEY=$TOKEN_KEY"
	"COAPGATE_CLUSTER_NATS_URL=nats://127.0.0.1:$NATS_PORT")
PG_KEY=$(env "${PG_ENV[@]}" "$BIN/coapgate" apikey create --name bench --data-dir "$BENCH_TMP/admin" 2>&1 |
	grep -o 'cgk_[A-Za-z0-9_-]*' | head -1)
[ -n "$PG_KEY" ] || { echo "apikey create on PostgreSQL failed" >&2; exit 1; }

# start_node NAME [pin] [ENV...]: a node on the shared PostgreSQL and NATS; sets
# NODE_PID, NODE_COAP, NODE_DTLS, NODE_API. pin: GOMAXPROCS=1 on core 0
# (spawn_server); otherwise GOMAXPROCS=1 unpinned.
start_node() {
	local name=$1 dir=$BENCH_TMP/$1 apiport
	mkdir -p "$dir"
	NODE_COAP=127.0.0.1:$(free_port) NODE_DTLS=127.0.0.1:$(free_port) apiport=$(free_port)
	NODE_API=http://127.0.0.1:$apiport
	local envs=("${PG_ENV[@]}" "COAPGATE_CLUSTER_NODE=$name" "COAPGATE_DATA_DIR=$dir/data"
		"COAPGATE_COAP_LISTEN=$NODE_COAP" COAPGATE_COAP_SYMMETRIC_LISTEN= "COAPGATE_DTLS_LISTEN=$NODE_DTLS"
		"COAPGATE_API_LISTEN=127.0.0.1:$apiport" COAPGATE_DTLS_HANDSHAKE_RATE=0
		COAPGATE_LOG_LEVEL=warn "${@:3}")
	if [ "${2:-}" = pin ]; then
		SPAWN_LOG=$dir/server.log spawn_server env "${envs[@]}" "$BIN/coapgate" serve
	else
		(export GOMAXPROCS=1; exec env "${envs[@]}" "$BIN/coapgate" serve) >"$dir/server.log" 2>&1 &
		SPAWNED=$!
		BENCH_PIDS+=("$SPAWNED")
	fi
	NODE_PID=$SPAWNED
	SPAWN_LOG=$dir/server.log wait_owned "$NODE_PID" tcp "$apiport"
	SPAWN_LOG=$dir/server.log wait_owned "$NODE_PID" udp "${NODE_COAP##*:}"
}

# measure NAME GATEWAYS ARGS...: one generator run between two snapshots.
# GATEWAYS: "name=api_url=pid ..." of the nodes in play; PostgreSQL, NATS and
# nginx are added when running.
measure() {
	local name=$1 gws=$2 g a=() n u p; shift 2
	for g in $gws; do
		IFS== read -r n u p <<<"$g"
		a+=(--api "$n=$u" --pids "gw-$n=$p")
	done
	a+=(--pg "$PG_PORT:$PG_PID" --nats "http://127.0.0.1:$NATS_MON")
	[ -n "${NGINX_PID:-}" ] && a+=(--pids "nginx=$NGINX_PID")
	echo "== $name ($(cut -d' ' -f1-3 /proc/loadavg))" >&2
	python3 "$HERE/clusterstat.py" snap "$R/$name.before.json" "${a[@]}"
	local t0 t1
	t0=$(awk '{print $14+$15+$16+$17}' /proc/$$/stat)
	# the generator runs as a child of this shell: its CPU shows in our cutime
	( exec "${GEN_CMD[@]}" "$@" "${GEN[@]}" ) >"$R/$name.json" 2>"$R/$name.err" ||
		echo "   ($name: $(tail -1 "$R/$name.err"))" >&2
	t1=$(awk '{print $14+$15+$16+$17}' /proc/$$/stat)
	python3 "$HERE/clusterstat.py" snap "$R/$name.after.json" "${a[@]}"
	python3 -c "import os; print(($t1-$t0)/os.sysconf('SC_CLK_TCK'))" >"$R/$name.gen"
}

# --- phase 1: one node, embedded vs PostgreSQL + NATS, same core ---------------
start_gateway lite
LITE=(--api "$GW_API" --api-key "$GW_KEY" --product "$GW_PK")
LITE_GW="lite=$GW_API=$GW_PID"
LITE_COAP=$GW_COAP LITE_DTLS=$GW_DTLS
start_node pg1 pin
PG1_PID=$NODE_PID PG1_COAP=$NODE_COAP PG1_DTLS=$NODE_DTLS PG1_API=$NODE_API
PG_PK=$(COAPGATE_API_URL=$PG1_API COAPGATE_API_KEY=$PG_KEY "$BIN/coapgate" product create --name bench-cluster --json |
	sed -n 's/.*"productKey": *"\([^"]*\)".*/\1/p')
[ -n "$PG_PK" ] || { echo "product create on PostgreSQL failed" >&2; exit 1; }
PG1=(--api "$PG1_API" --api-key "$PG_KEY" --product "$PG_PK")
PG1_GW="pg1=$PG1_API=$PG1_PID"
start_node pgmiss pin "$MISS_ENV"
PGM_PID=$NODE_PID PGM_COAP=$NODE_COAP
PGM=(--api "$NODE_API" --api-key "$PG_KEY" --product "$PG_PK")
PGM_GW="pgmiss=$NODE_API=$NODE_PID"

waldump() { # waldump RUN: WAL by record type between RUN's snapshots
	local a b
	a=$(jget "$1.before.json" pg.lsn) b=$(jget "$1.after.json" pg.lsn)
	"$PGBIN/pg_waldump" --stats=record -p "$PGDIR/data/pg_wal" -s "$a" -e "$b"
}
if [ -z "${BENCH_NOPIN:-}" ]; then GEN_CMD=(taskset -c "${CLIENT_CPU:-1}" "$BIN/coapdev" bench); else GEN_CMD=("$BIN/coapdev" bench); fi
single() { # single VARIANT REP
	case $1 in
	lite)
		measure "single-up-lite-r$2" "$LITE_GW" --mode token --server "$LITE_COAP" "${LITE[@]}" --devices 32
		for rt in $RATES; do
			measure "single-rate$rt-lite-r$2" "$LITE_GW" --mode token --server "$LITE_COAP" "${LITE[@]}" --devices 32 --rate "$rt"
		done
		[ "$HANDSHAKES" = 0 ] || measure "single-hs-lite-r$2" "$LITE_GW" --mode dtls --server "$LITE_DTLS" "${LITE[@]}" --devices 32 --handshakes
		;;
	pg)
		measure "single-up-pg-r$2" "$PG1_GW" --mode token --server "$PG1_COAP" "${PG1[@]}" --devices 32
		[ "$2" != 1 ] || waldump "$R/single-up-pg-r1" >"$R/wal.txt" 2>&1 || true
		for rt in $RATES; do
			measure "single-rate$rt-pg-r$2" "$PG1_GW" --mode token --server "$PG1_COAP" "${PG1[@]}" --devices 32 --rate "$rt"
		done
		[ "$HANDSHAKES" = 0 ] || measure "single-hs-pg-r$2" "$PG1_GW" --mode dtls --server "$PG1_DTLS" "${PG1[@]}" --devices 32 --handshakes
		;;
	pgmiss)
		measure "single-up-pgmiss-r$2" "$PGM_GW" --mode token --server "$PGM_COAP" "${PGM[@]}" --devices 32
		for rt in $RATES; do
			measure "single-rate$rt-pgmiss-r$2" "$PGM_GW" --mode token --server "$PGM_COAP" "${PGM[@]}" --devices 32 --rate "$rt"
		done
		;;
	esac
}
for r in $(seq 1 "$REPS"); do
	if [ $((r % 2)) = 1 ]; then single lite "$r"; single pg "$r"; single pgmiss "$r"; else single pgmiss "$r"; single pg "$r"; single lite "$r"; fi
done
stop_pid "$GW_PID"
stop_pid "$PG1_PID"
stop_pid "$PGM_PID"

# --- phase 2: behind nginx, one node vs three ------------------------------------
[ "$LB" != 0 ] || {
	OUT=$HERE/results/cluster-$(date -u +%Y%m%dT%H%M%SZ)${1:+-quick}.json
	python3 "$HERE/clusterstat.py" report "$R" "$OUT"
	exit 0
}
GWS=""
NODES=()
for n in n1 n2 n3; do
	start_node "$n"
	GWS="$GWS $n=$NODE_API=$NODE_PID"
	NODES+=("$NODE_COAP")
done
LB1=$(free_port) LB3=$(free_port)
mkdir -p "$BENCH_TMP/nginx"
cat >"$BENCH_TMP/nginx/nginx.conf" <<EOF
load_module $NGINX_MOD;
pid $BENCH_TMP/nginx/nginx.pid;
error_log $BENCH_TMP/nginx/error.log warn;
worker_processes auto;
events { worker_connections 8192; }
stream {
  upstream one {
    hash \$remote_addr consistent;
    server ${NODES[0]} max_fails=1 fail_timeout=60s;
  }
  upstream three {
    hash \$remote_addr consistent;
    server ${NODES[0]} max_fails=1 fail_timeout=60s;
    server ${NODES[1]} max_fails=1 fail_timeout=60s;
    server ${NODES[2]} max_fails=1 fail_timeout=60s;
  }
  server {
    listen 127.0.0.1:$LB1 udp reuseport;
    proxy_pass one;
    proxy_timeout 60s;
  }
  server {
    listen 127.0.0.1:$LB3 udp reuseport;
    proxy_pass three;
    proxy_timeout 60s;
  }
}
EOF
nginx -p "$BENCH_TMP/nginx" -c "$BENCH_TMP/nginx/nginx.conf" -g 'daemon off;' >"$BENCH_TMP/nginx/out.log" 2>&1 &
NGINX_PID=$!
BENCH_PIDS+=("$NGINX_PID")
for i in $(seq 1 300); do # its workers own the reuseport sockets
	ss -Hlnup "sport = :$LB1" | grep -q nginx && ss -Hlnup "sport = :$LB3" | grep -q nginx && break
	kill -0 "$NGINX_PID" 2>/dev/null && [ "$i" -lt 300 ] || { cat "$BENCH_TMP/nginx/"*.log >&2; exit 1; }
	sleep 0.1
done
N1_API=$(echo "$GWS" | tr ' ' '\n' | sed -n 's/^n1=\(http[^=]*\)=.*/\1/p')
LB=(--api "$N1_API" --api-key "$PG_KEY" --product "$PG_PK" --devices 32 --src-ips 127.0.0.10-127.0.0.41)
GEN_CMD=("$BIN/coapdev" bench)
N1_GW=$(echo "$GWS" | tr ' ' '\n' | grep '^n1=')
for r in $(seq 1 "$REPS"); do
	if [ $((r % 2)) = 1 ]; then order="1node 3nodes"; else order="3nodes 1node"; fi
	for v in $order; do
		if [ "$v" = 1node ]; then
			measure "lb-up-1node-r$r" "$N1_GW" --mode token --server "127.0.0.1:$LB1" "${LB[@]}"
		else
			measure "lb-up-3nodes-r$r" "$GWS" --mode token --server "127.0.0.1:$LB3" "${LB[@]}"
		fi
	done
done

mkdir -p "$HERE/results"
OUT=$HERE/results/cluster-$(date -u +%Y%m%dT%H%M%SZ)${1:+-quick}.json
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r), $(go version | cut -d' ' -f3), PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}')"
python3 "$HERE/clusterstat.py" report "$R" "$OUT"
[ -s "$R/wal.txt" ] && cp "$R/wal.txt" "${OUT%.json}-wal.txt" && echo "WAL by record type: ${OUT%.json}-wal.txt"
