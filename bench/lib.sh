# Helpers shared by bench/run.sh and bench/smoke.sh (sourced, not run).
# Every process started here is recorded in $BENCH_PIDS and killed by
# bench_cleanup (installed as an EXIT trap by the callers).

BENCH_PIDS=()
BENCH_TMP=${BENCH_TMP:-$(mktemp -d /tmp/coapgate-bench.XXXXXX)}
BIN=${BIN:-$BENCH_TMP/bin}

bench_cleanup() {
	local p
	for p in "${BENCH_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${BENCH_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	BENCH_PIDS=()
	[ -n "${BENCH_KEEP:-}" ] || rm -rf "$BENCH_TMP"
}

bench_build() {
	mkdir -p "$BIN"
	(cd "$(dirname "${BASH_SOURCE[0]}")/.." &&
		go build -o "$BIN/coapgate" ./cmd/coapgate &&
		go build -o "$BIN/coapdev" ./cmd/coapdev)
}

# free_port prints a free UDP+TCP port on 127.0.0.1.
free_port() {
	python3 -c 'import socket
for _ in range(100):
    u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); u.bind(("127.0.0.1",0)); p=u.getsockname()[1]
    t=socket.socket(); 
    try:
        t.bind(("127.0.0.1",p)); t.close(); u.close(); print(p); break
    except OSError: u.close(); t.close()'
}

# spawn_server CMD...: starts CMD in the background pinned like a server
# (GOMAXPROCS=1 on core $SERVER_CPU, default 0; BENCH_NOPIN=1 disables the
# pinning), records its PID in SPAWNED and BENCH_PIDS. The subshell execs,
# so the PID is the server's own. Output goes to $SPAWN_LOG.
spawn_server() {
	if [ -n "${BENCH_NOPIN:-}" ]; then
		(export GOMAXPROCS=1; exec "$@") >"${SPAWN_LOG:-/dev/null}" 2>&1 &
	else
		(export GOMAXPROCS=1; exec taskset -c "${SERVER_CPU:-0}" "$@") >"${SPAWN_LOG:-/dev/null}" 2>&1 &
	fi
	SPAWNED=$!
	BENCH_PIDS+=("$SPAWNED")
}
pin_client() { if [ -n "${BENCH_NOPIN:-}" ]; then "$@"; else taskset -c "${CLIENT_CPU:-1}" "$@"; fi; }

# wait_udp_tcp PORT: wait until something listens on TCP PORT (the API).
wait_tcp() {
	local i
	for i in $(seq 1 100); do
		(exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
		sleep 0.1
	done
	echo "nothing listens on 127.0.0.1:$1" >&2
	return 1
}

# wait_owned PID udp|tcp PORT: wait until process PID itself has a socket on
# 127.0.0.1:PORT (not merely anything: a foreign process on a port picked by
# free_port must not pass for ours). Fails, printing $SPAWN_LOG when given,
# as soon as PID exits.
wait_owned() {
	local pid=$1 proto=$2 port=$3 i
	for i in $(seq 1 600); do
		ss -Hlnp -A "$proto" "sport = :$port" 2>/dev/null | grep -q "pid=$pid," && return 0
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "process $pid exited before listening on $proto port $port" >&2
			[ -n "${SPAWN_LOG:-}" ] && [ -f "$SPAWN_LOG" ] && cat "$SPAWN_LOG" >&2
			return 1
		fi
		sleep 0.1
	done
	echo "process $pid does not listen on $proto port $port after 60 s" >&2
	return 1
}

# start_gateway NAME: starts coapgate pinned, on free ports, with its own
# data dir; sets GW_PID, GW_COAP, GW_SYM, GW_DTLS, GW_API, GW_KEY, GW_PK.
# Extra environment (e.g. COAPGATE_...) is passed through.
start_gateway() {
	local name=$1 dir=$BENCH_TMP/$1
	mkdir -p "$dir"
	GW_COAP=127.0.0.1:$(free_port) GW_SYM=127.0.0.1:$(free_port) GW_DTLS=127.0.0.1:$(free_port)
	local apiport; apiport=$(free_port)
	GW_API=http://127.0.0.1:$apiport
	COAPGATE_DATA_DIR=$dir/data COAPGATE_COAP_LISTEN=$GW_COAP COAPGATE_COAP_SYMMETRIC_LISTEN=$GW_SYM \
		COAPGATE_DTLS_LISTEN=$GW_DTLS COAPGATE_API_LISTEN=127.0.0.1:$apiport COAPGATE_DTLS_HANDSHAKE_RATE=0 \
		COAPGATE_LOG_LEVEL=${GW_LOG_LEVEL:-warn} SPAWN_LOG=$dir/server.log \
		spawn_server "$BIN/coapgate" serve ${GW_ARGS[@]+"${GW_ARGS[@]}"}
	GW_PID=$SPAWNED
	GW_LOG=$dir/server.log
	wait_owned "$GW_PID" tcp "$apiport" && wait_owned "$GW_PID" udp "${GW_COAP##*:}" ||
		{ cat "$dir/server.log" >&2; return 1; }
	local i
	for i in $(seq 1 50); do
		GW_KEY=$(grep -o 'cgk_[A-Za-z0-9_-]*' "$dir/server.log" | head -1)
		[ -n "$GW_KEY" ] && break
		sleep 0.1
	done
	[ -n "$GW_KEY" ] || { echo "no bootstrap API key in $dir/server.log" >&2; return 1; }
	GW_PK=$(COAPGATE_API_URL=$GW_API COAPGATE_API_KEY=$GW_KEY "$BIN/coapgate" product create --name "bench-$name" --json |
		sed -n 's/.*"productKey": *"\([^"]*\)".*/\1/p')
	[ -n "$GW_PK" ] || { echo "product create failed" >&2; return 1; }
}

# stop_pid PID: stop one process started here.
stop_pid() { kill "$1" 2>/dev/null; wait "$1" 2>/dev/null; true; }

# bench_dev ARGS...: coapdev bench pinned to the client core.
bench_dev() { pin_client "$BIN/coapdev" bench "$@"; }

# gw_args MODE: the coapdev bench flags to reach the gateway in MODE.
gw_args() {
	local server
	case $1 in
	token) server=$GW_COAP ;;
	symmetric) server=$GW_SYM ;;
	dtls) server=$GW_DTLS ;;
	esac
	echo --mode "$1" --server "$server" --api "$GW_API" --api-key "$GW_KEY" --product "$GW_PK"
}

# jget FILE FIELD: a top-level number of a report (python3 is everywhere here).
jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); v=d
for k in sys.argv[2].split("."): v=v.get(k,0) if isinstance(v,dict) else 0
print(v)' "$1" "$2"; }

# RAWKEY for libcoap's -k: key bytes of secret devsecret1.
LIBCOAP_KEYHEX=a416dac63bb52a7d94ddd45db9a2de92
LIBCOAP_IDENT=bench
rawkey() { printf '%b' "$(echo $LIBCOAP_KEYHEX | sed 's/../\\x&/g')"; }
