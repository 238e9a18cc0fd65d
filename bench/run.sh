#!/usr/bin/env bash
# bench/run.sh [--quick]: coapgate side by side with libcoap 4.3.1, one
# generator (coapdev bench) for both. Servers run pinned GOMAXPROCS=1
# taskset -c 0, the generator on core 1 (method of docs/BENCHMARKS.md:
# 32 client sockets, 256 outstanding CON POSTs, 64 B payload).
#
#   (a) plain CoAP: coap-server-notls vs coapgate token publish (durable store)
#   (b) DTLS-PSK publish over established sessions: coapgate DTLS vs
#       coap-server-gnutls (CBC_SHA256), and coapgate with CCM_8
#   (c) full PSK handshakes/s: coap-server-openssl vs coapgate (CCM_8)
#   (d) p99 latency of ours at half its maximum rate; a sweep of offered
#       load for both sides, plotted to bench/results/bench.png (gnuplot)
#   (e) idle DTLS sessions: server RSS growth per session, both sides
#   (f) DTLS publish (CCM_8, row b) / token publish (a), same payload and run
#
# Prints a table of ratios ours/libcoap and writes bench/results/<time>.json.
# BENCH_NOPIN=1 runs unpinned (a machine with fewer than 2 cores).
# BENCH_PROFILE=DIR saves a CPU profile of the gateway (api.pprof_listen)
# taken during rows (a), (b) CCM_8 and (c) as DIR/{a,f,c}-ours.pprof.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
trap bench_cleanup EXIT

# HOLD: RSS is read this long after the idle sessions are up, on both sides;
# ours: > dtls.handshake_timeout (30 s, a finished handshake's last flight is
# kept that long for retransmission) + the engine's 10 s cipher cache.
D=10s W=2s SWEEP="0.25 0.5 0.75 1.0 1.25" IDLE=5000 HOLD=45s
if [ "${1:-}" = "--quick" ]; then D=3s W=1s SWEEP="0.5 1.0" IDLE=500 HOLD=1s; fi
GEN=(--sockets 32 --outstanding 256 --payload-size 64 --duration "$D" --warmup "$W" --json --quiet)

for t in coap-server-notls coap-server-gnutls coap-server-openssl gnuplot; do
	command -v "$t" >/dev/null || { echo "installing libcoap3-bin gnuplot-nox" >&2; apt-get install -y libcoap3-bin gnuplot-nox >/dev/null; break; }
done
bench_build
export BENCH_LOAD_START # the load average before the first run, for the report
BENCH_LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
R=$BENCH_TMP/r
mkdir -p "$R"
# run NAME ARGS...: one generator run, report in $R/NAME.json (a failed run
# still leaves its report; the table shows it).
# Each run also records in $R/NAME.cpu the CPU seconds the server ($SRV,
# the last one started) and the generator spent during it, and its wall
# time: which side's core was busy.
run() {
	local name=$1 t0; shift
	echo "== $name" >&2
	t0=$(ticks "$SRV")
	local TIMEFORMAT='%3R %3U %3S'
	{ time bench_dev "$@" "${GEN[@]}" >"$R/$name.json" 2>"$R/$name.err"; } 2>"$R/$name.time" ||
		echo "   ($name: $(tail -1 "$R/$name.err"))" >&2
	echo "$(cat "$R/$name.time") $(( $(ticks "$SRV") - t0 ))" >"$R/$name.cpu"
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; } # utime + stime, 1/100 s
libcoap() { # libcoap VARIANT: starts coap-server-VARIANT pinned; LC_PORT, LC_PID
	LC_PORT=$(free_port)
	local key=()
	[ "$1" = notls ] || key=(-k "$(rawkey)")
	spawn_server "coap-server-$1" -A 127.0.0.1 -p "$LC_PORT" -d 5000 -v 0 "${key[@]}"
	LC_PID=$SPAWNED SRV=$SPAWNED
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
# gateway: start_gateway with a pprof listener when BENCH_PROFILE is set.
gateway() {
	if [ -n "${BENCH_PROFILE:-}" ]; then
		mkdir -p "$BENCH_PROFILE"
		PPROF=127.0.0.1:$(free_port)
		COAPGATE_API_PPROF_LISTEN=$PPROF start_gateway "$1"
	else
		start_gateway "$1"
	fi
	SRV=$GW_PID
}
# profiled NAME ARGS...: run NAME, with a CPU profile of the gateway over
# its warm-up and measurement when BENCH_PROFILE is set.
profiled() {
	local name=$1 secs prof=
	if [ -n "${BENCH_PROFILE:-}" ]; then
		secs=$(( ${D%s} + ${W%s} ))
		curl -s -o "$BENCH_PROFILE/$name.pprof" "http://$PPROF/debug/pprof/profile?seconds=$secs" &
		prof=$!
	fi
	run "$@"
	[ -z "$prof" ] || wait "$prof" || echo "   ($name: no profile)" >&2
}

# (a) plain CoAP
libcoap notls
run a-libcoap --mode plain --server "127.0.0.1:$LC_PORT" --path /bench
sweep libcoap "$(rate a-libcoap)" --mode plain --server "127.0.0.1:$LC_PORT" --path /bench
stop_pid "$LC_PID"
gateway a
profiled a-ours $(gw_args token) --devices 32
# (d) latency at half of our maximum rate
run d-ours-half $(gw_args token) --devices 32 --rate "$(python3 -c "print(int($(rate a-ours)/2))")"
sweep ours "$(rate a-ours)" $(gw_args token) --devices 32
run a-ours-symmetric $(gw_args symmetric) --devices 32
stop_pid "$GW_PID"

# (b) DTLS-PSK over established sessions (libcoap's DTLS port is CoAP's + 1)
libcoap gnutls
run b-libcoap --mode dtls-plain --server "127.0.0.1:$((LC_PORT + 1))" --psk-identity "$LIBCOAP_IDENT" --psk-key "$LIBCOAP_KEYHEX" --cipher cbc --path /bench
stop_pid "$LC_PID"
gateway b
run b-ours $(gw_args dtls) --devices 32 --cipher cbc
# (f) the same with CCM_8, the SDK's first offer, against (a)
profiled f-ours $(gw_args dtls) --devices 32
# (c) full PSK handshakes/s, 32 in parallel
profiled c-ours $(gw_args dtls) --devices 32 --handshakes
stop_pid "$GW_PID"
libcoap openssl
run c-libcoap --mode dtls-plain --server "127.0.0.1:$((LC_PORT + 1))" --psk-identity "$LIBCOAP_IDENT" --psk-key "$LIBCOAP_KEYHEX" --handshakes
stop_pid "$LC_PID"

# (e) idle sessions: RSS growth per session of the server process
libcoap openssl
run e-libcoap --mode dtls-plain --server "127.0.0.1:$((LC_PORT + 1))" --psk-identity "$LIBCOAP_IDENT" --psk-key "$LIBCOAP_KEYHEX" --idle "$IDLE" --hold "$HOLD" --server-pid "$LC_PID" --path /bench
stop_pid "$LC_PID"
gateway e
run e-ours $(gw_args dtls) --devices 32 --idle "$IDLE" --hold "$HOLD" --server-pid "$GW_PID"
stop_pid "$GW_PID"

mkdir -p "$HERE/results"
OUT=$HERE/results/$(date -u +%Y%m%dT%H%M%SZ)${1:+-quick}.json
python3 "$HERE/report.py" "$R" "$OUT" "$HERE/results/sweep.dat"
if command -v gnuplot >/dev/null; then
	gnuplot -e "datafile='$HERE/results/sweep.dat'; outfile='$HERE/results/bench.png'" "$HERE/plot.gp" &&
		echo "plot: $HERE/results/bench.png"
fi
