#!/usr/bin/env bash
# Runs the README quick start on a temporary data dir and loopback ports:
# starts `coapgate serve` (built from this tree), checks health, creates a
# product and a device with the admin key it printed, authenticates and
# publishes with coapdev, reads the message back, then stops the server.
#
# Every listener binds port 0; the script reads the addresses the kernel
# chose from the server's start line, so it never reaches a foreign
# process. On failure it prints the server's log before removing it.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
pid=
cleanup() {
  rc=$?
  if [ -n "$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  if [ "$rc" != 0 ] && [ -f "$tmp/out" ]; then
    echo "quick start FAILED (exit $rc); server log:" >&2
    cat "$tmp/out" >&2
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "quick start: $*" >&2; exit 1; }
go build -o "$tmp/coapgate" ./cmd/coapgate
go build -o "$tmp/coapdev" ./cmd/coapdev
export COAPGATE_DATA_DIR=$tmp/data COAPGATE_COAP_LISTEN=127.0.0.1:0 COAPGATE_COAP_SYMMETRIC_LISTEN=127.0.0.1:0 COAPGATE_DTLS_LISTEN=127.0.0.1:0 COAPGATE_API_LISTEN=127.0.0.1:0
# A misspelt variable (coap.listen without its e) is reported, not ignored.
COAPGATE_COAP_LISTN=:1 "$tmp/coapgate" serve >"$tmp/out" 2>&1 &
pid=$!
# Wait for the start line (or for the server to die): it names the bound addresses.
for _ in $(seq 1 300); do
  grep -q 'msg="coapgate started"' "$tmp/out" && break
  kill -0 "$pid" 2>/dev/null || { wait "$pid" || true; pid=; fail "server exited before it started"; }
  sleep 0.2
done
line=$(grep 'msg="coapgate started"' "$tmp/out") || fail "no start line after 60 s"
addr() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
coap=$(addr coap) sym=$(addr coap_sym) dtls=$(addr dtls) api=$(addr api)
[ -n "$coap" ] && [ -n "$sym" ] && [ -n "$dtls" ] && [ -n "$api" ] || fail "cannot read addresses from: $line"
echo "server pid $pid: coap $coap, symmetric $sym, dtls $dtls, api $api"
grep -q 'unknown environment variable.*env=COAPGATE_COAP_LISTN' "$tmp/out" || fail "no warning for the unknown COAPGATE_COAP_LISTN"
"$tmp/coapgate" health --api "http://$api"
export COAPGATE_API_URL=http://$api
COAPGATE_API_KEY=$(grep -o 'cgk_[A-Za-z0-9_-]*' "$tmp/out" | head -n 1)
export COAPGATE_API_KEY
pk=$("$tmp/coapgate" product create --name smoke --json | sed -n 's/.*"productKey": *"\([^"]*\)".*/\1/p')
ds=$("$tmp/coapgate" device create --json "$pk" dev1 | sed -n 's/.*"deviceSecret": *"\([^"]*\)".*/\1/p')
export COAPDEV_PRODUCT=$pk COAPDEV_DEVICE=dev1 COAPDEV_SECRET=$ds
"$tmp/coapdev" publish --server "$coap" --topic "/sys/$pk/dev1/thing/event/property/post" \
  --data '{"id":"1","version":"1.0","method":"thing.event.property.post","params":{"temp":21.5}}'
# The symmetric-encryption listener (AES payloads, option 2089).
"$tmp/coapdev" publish --mode symmetric --server "$sym" --topic "/$pk/dev1/user/sym" --data '{"sym":true}' | tee "$tmp/sym"
grep -q 'code=2.04' "$tmp/sym"
# CoAP over DTLS-PSK (identity pk,dk,2,lifetime; no token).
"$tmp/coapdev" publish --dtls --server "$dtls" --topic "/$pk/dev1/user/dtls" --data '{"dtls":true}' | tee "$tmp/dtls"
grep -q 'code=2.04' "$tmp/dtls"
# The README's coap-client example, as written there (credentials and
# addresses from this run), when libcoap's clients and openssl are here.
if command -v coap-client-notls >/dev/null && command -v coap-client-openssl >/dev/null && command -v openssl >/dev/null; then
  sed -n '/<!-- coap-client example: begin/,/<!-- coap-client example: end/p' README.md |
    sed -n '/^```sh$/,/^```$/p' | sed '1d;$d' | grep -v '^PK=\|^GW=' >"$tmp/readme.sh"
  PK=$pk DN=dev1 SECRET=$ds GW=$coap GWS=$dtls bash -eu "$tmp/readme.sh" >"$tmp/cc" 2>&1 || { cat "$tmp/cc"; fail "README coap-client example failed"; }
  cat "$tmp/cc"
  want=2
  grep -q 'key has a 0x00 byte' "$tmp/cc" && want=1
  [ "$(grep -c '"code":200' "$tmp/cc")" = "$want" ] || fail "README coap-client example: want $want replies with code 200"
  cc_msgs=$want
else
  echo "SKIP README coap-client example: libcoap's coap-client or openssl missing"
  cc_msgs=0
fi
"$tmp/coapgate" messages "$pk" dev1 | tee "$tmp/msgs"
[ "$(grep -c "/$pk/dev1/" "$tmp/msgs")" = "$((3 + cc_msgs))" ] || fail "want $((3 + cc_msgs)) stored messages"
grep -q "/sys/$pk/dev1/thing/event/property/post" "$tmp/msgs"
grep -q "/$pk/dev1/user/sym" "$tmp/msgs"
grep -q "/$pk/dev1/user/dtls" "$tmp/msgs"
# Stop it and wait for exactly this process to exit.
kill -TERM "$pid"
rc=0; wait "$pid" || rc=$?
pid=
[ "$rc" = 0 ] || fail "server exited with status $rc after SIGTERM"
grep -q 'msg=stopped' "$tmp/out" || fail "server did not log a clean stop"
echo "quick start OK"
