#!/usr/bin/env bash
# bench/run.sh [--quick]: coapgate side by side with libcoap 4.3.1, one
# generator (coapdev bench) for both. Servers run pinned GOMAXPROCS=1
# taskset -c 0, the generator on core 1 (method of docs/BENCHMARKS.md:
# 32 client sockets, 256 outstanding CON POSTs, 64 B payload).
#
#   (a) plain CoAP: coap-server-notls vs coapgate token publish (durable store)
#   (b) DTLS-PSK over established sessions: coap-server-gnutls vs coapgate 5684 (CBC_SHA256)
#   (c) full PSK handshakes/s: coap-server-openssl vs coapgate (CCM_8)
#   (d) p99 latency of ours at half its maximum rate; a sweep of offered
#       load for both sides, plotted to bench/results/bench.png (gnuplot)
#   (e) idle DTLS sessions: server RSS growth per session, both sides
#   native rows: (b), (c) and (e) again with dtls.engine native, and
#   (f) DTLS publish on the native engine / token publish (a), same payload
#
# Prints a table of ratios ours/libcoap and writes bench/results/<time>.json.
# BENCH_NOPIN=1 runs unpinned (a machine with fewer than 2 cores).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
trap bench_cleanup EXIT

D=10s W=2s SWEEP="0.25 0.5 0.75 1.0 1.25" IDLE=5000 HOLD=15s # HOLD > dtls.hibernate_after (10s)
NHOLD=45s # native: > dtls.handshake_timeout (30s, a finished handshake's last flight is kept that long) + 10s cipher cache
if [ "${1:-}" = "--quick" ]; then D=3s W=1s SWEEP="0.5 1.0" IDLE=500 HOLD=1s NHOLD=1s; fi
GEN=(--sockets 32 --outstanding 256 --payload-size 64 --duration "$D" --warmup "$W" --json --quiet)

for t in coap-server-notls coap-server-gnutls coap-server-openssl gnuplot; do
	command -v "$t" >/dev/null || { echo "installing libcoap3-bin gnuplot-nox" >&2; apt-get install -y libcoap3-bin gnuplot-nox >/dev/null; break; }
done
bench_build
R=$BENCH_TMP/r
mkdir -p "$R"
# run NAME ARGS...: one generator run, report in $R/NAME.json (a failed run
# still leaves its report; the table shows it).
run() {
	local name=$1; shift
	echo "== $name" >&2
	bench_dev "$@" "${GEN[@]}" >"$R/$name.json" 2>"$R/$name.err" || echo "   ($name: $(tail -1 "$R/$name.err"))" >&2
}
libcoap() { # libcoap VARIANT: starts coap-server-VARIANT pinned; LC_PORT, LC_PID
	LC_PORT=$(free_port)
	local key=()
	[ "$1" = notls ] || key=(-k "$(rawkey)")
	spawn_server "coap-server-$1" -A 127.0.0.1 -p "$LC_PORT" -d 5000 -v 0 "${key[@]}"
	LC_PID=$SPAWNED
	wait_owned "$LC_PID" udp "$LC_PORT"
	[ "$1" = notls ] || wait_owned "$LC_PID" udp "$((LC_PORT + 1))"
}
sweep() { # sweep NAME MAXRATE ARGS...: open-loop runs at fractions of MAXRATE
	local name=$1 max=$2 f; shift 2
	for f in $SWEEP; do
		run "sweep-$name-$f" "$@" --rate "$(python3 -c "print(max(100,int($max*$f)))")"
	done
}
rate() { jget "$R/$1.json" reqPerSec; }

# (a) plain CoAP
libcoap notls
run a-libcoap --mode plain --server "127.0.0.1:$LC_PORT" --path /bench
sweep libcoap "$(rate a-libcoap)" --mode plain --server "127.0.0.1:$LC_PORT" --path /bench
stop_pid "$LC_PID"
start_gateway a
run a-ours $(gw_args token) --devices 32
# (d) latency at half of our maximum rate
run d-ours-half $(gw_args token) --devices 32 --rate "$(python3 -c "print(int($(rate a-ours)/2))")"
sweep ours "$(rate a-ours)" $(gw_args token) --devices 32
run a-ours-symmetric $(gw_args symmetric) --devices 32
stop_pid "$GW_PID"

# (b) DTLS-PSK over established sessions (libcoap's DTLS port is CoAP's + 1)
libcoap gnutls
run b-libcoap --mode dtls-plain --server "127.0.0.1:$((LC_PORT + 1))" --psk-identity "$LIBCOAP_IDENT" --psk-key "$LIBCOAP_KEYHEX" --cipher cbc --path /bench
stop_pid "$LC_PID"
start_gateway b
run b-ours $(gw_args dtls) --devices 32 --cipher cbc

# (c) full PSK handshakes/s, 32 in parallel
run c-ours $(gw_args dtls) --devices 32 --handshakes
stop_pid "$GW_PID"
# the same (b) and (c) on the native DTLS engine
COAPGATE_DTLS_ENGINE=native start_gateway bn
run b-native $(gw_args dtls) --devices 32 --cipher cbc
run f-native $(gw_args dtls) --devices 32
run c-native $(gw_args dtls) --devices 32 --handshakes
stop_pid "$GW_PID"
libcoap openssl
run c-libcoap --mode dtls-plain --server "127.0.0.1:$((LC_PORT + 1))" --psk-identity "$LIBCOAP_IDENT" --psk-key "$LIBCOAP_KEYHEX" --handshakes
stop_pid "$LC_PID"

# (e) idle sessions: RSS growth per session of the server process
libcoap openssl
run e-libcoap --mode dtls-plain --server "127.0.0.1:$((LC_PORT + 1))" --psk-identity "$LIBCOAP_IDENT" --psk-key "$LIBCOAP_KEYHEX" --idle "$IDLE" --hold "$HOLD" --server-pid "$LC_PID" --path /bench
stop_pid "$LC_PID"
start_gateway e
run e-ours $(gw_args dtls) --devices 32 --idle "$IDLE" --hold "$HOLD" --server-pid "$GW_PID"
stop_pid "$GW_PID"
COAPGATE_DTLS_ENGINE=native start_gateway en
run e-native $(gw_args dtls) --devices 32 --idle "$IDLE" --hold "$NHOLD" --server-pid "$GW_PID"
stop_pid "$GW_PID"

mkdir -p "$HERE/results"
OUT=$HERE/results/$(date -u +%Y%m%dT%H%M%SZ)${1:+-quick}.json
python3 "$HERE/report.py" "$R" "$OUT" "$HERE/results/sweep.dat"
if command -v gnuplot >/dev/null; then
	gnuplot -e "datafile='$HERE/results/sweep.dat'; outfile='$HERE/results/bench.png'" "$HERE/plot.gp" &&
		echo "plot: $HERE/results/bench.png"
fi
