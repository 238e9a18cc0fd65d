#!/usr/bin/env bash
# bench/smoke.sh: CI smoke of coapdev bench. Builds coapgate and coapdev,
# starts a gateway on free 127.0.0.1 ports with a temporary data dir,
# creates a product and devices through the API, and runs every mode for a
# few seconds: token, symmetric, dtls, handshakes, idle (small M), plain
# against libcoap's coap-server-notls (or coapdev echo without libcoap).
# No timing assertions: a mode fails when it has no success or any error
# (coapdev bench's exit status). Kills everything it started on exit.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
trap bench_cleanup EXIT
export BENCH_NOPIN=1 # CI machines may have a single core
bench_build
S=(--duration 4s --warmup 500ms --sockets 4 --outstanding 16 --quiet)
fail=0
check() { # check NAME ARGS...
	local name=$1; shift
	if "$BIN/coapdev" bench "$@" >"$BENCH_TMP/$name.out" 2>&1; then
		echo "ok   $name: $(grep -E '^(req/s|handshakes/s|answered)' "$BENCH_TMP/$name.out" | tr -s ' ')"
	else
		echo "FAIL $name"; sed 's/^/     /' "$BENCH_TMP/$name.out"; fail=1
	fi
}
start_gateway smoke
check token $(gw_args token) --devices 8 "${S[@]}"
check symmetric $(gw_args symmetric) --devices 8 "${S[@]}"
check dtls $(gw_args dtls) --devices 8 "${S[@]}"
check handshakes $(gw_args dtls) --devices 8 --handshakes "${S[@]}"
check idle $(gw_args dtls) --devices 8 --idle 50 --server-pid "$GW_PID" "${S[@]}"
check open-loop $(gw_args token) --devices 8 --rate 500 "${S[@]}"
P=$(free_port)
if command -v coap-server-notls >/dev/null; then
	spawn_server coap-server-notls -A 127.0.0.1 -p "$P" -d 5000 -v 0
	what=libcoap
else
	spawn_server "$BIN/coapdev" echo --listen "127.0.0.1:$P"
	what="coapdev echo"
fi
wait_owned "$SPAWNED" udp "$P"
check "plain ($what)" --mode plain --server "127.0.0.1:$P" --path /bench "${S[@]}"
if command -v coap-server-gnutls >/dev/null; then
	# libcoap's DTLS port is its CoAP port + 1.
	P=$(free_port)
	spawn_server coap-server-gnutls -A 127.0.0.1 -p "$P" -d 5000 -v 0 -k "$(rawkey)"
	wait_owned "$SPAWNED" udp "$((P + 1))"
	check "dtls-plain (libcoap gnutls)" --mode dtls-plain --server "127.0.0.1:$((P + 1))" \
		--psk-identity "$LIBCOAP_IDENT" --psk-key "$LIBCOAP_KEYHEX" --cipher cbc --path /bench "${S[@]}"
fi
if [ "$fail" != 0 ] && [ -n "${GW_LOG:-}" ] && [ -f "$GW_LOG" ]; then
	echo "gateway log ($GW_LOG):"; tail -n 100 "$GW_LOG"
fi
exit $fail
