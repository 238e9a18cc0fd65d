#!/usr/bin/env bash
# Runs the README quick start on a temporary data dir and loopback ports:
# starts `go run ./cmd/coapgate serve`, checks health, creates a product and
# a device with the admin key it printed, authenticates and publishes with
# coapdev, reads the message back, then stops the server.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill -KILL -- "-$pid" 2>/dev/null; rm -rf "$tmp"' EXIT
go build -o "$tmp/coapgate" ./cmd/coapgate
go build -o "$tmp/coapdev" ./cmd/coapdev
export COAPGATE_DATA_DIR=$tmp/data COAPGATE_COAP_LISTEN=127.0.0.1:25683 COAPGATE_COAP_SYMMETRIC_LISTEN=127.0.0.1:25682 COAPGATE_DTLS_LISTEN=127.0.0.1:25684 COAPGATE_API_LISTEN=127.0.0.1:28080
# Its own process group, so the signal reaches the server under `go run`.
setsid go run ./cmd/coapgate serve >"$tmp/out" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -fsS http://127.0.0.1:28080/api/v1/health >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS http://127.0.0.1:28080/api/v1/health; echo
export COAPGATE_API_URL=http://127.0.0.1:28080
COAPGATE_API_KEY=$(grep -o 'cgk_[A-Za-z0-9_-]*' "$tmp/out" | head -n 1)
export COAPGATE_API_KEY
pk=$("$tmp/coapgate" product create --name smoke --json | sed -n 's/.*"productKey": *"\([^"]*\)".*/\1/p')
ds=$("$tmp/coapgate" device create --json "$pk" dev1 | sed -n 's/.*"deviceSecret": *"\([^"]*\)".*/\1/p')
export COAPDEV_PRODUCT=$pk COAPDEV_DEVICE=dev1 COAPDEV_SECRET=$ds
"$tmp/coapdev" publish --server 127.0.0.1:25683 --topic "/sys/$pk/dev1/thing/event/property/post" \
  --data '{"id":"1","version":"1.0","method":"thing.event.property.post","params":{"temp":21.5}}'
# The symmetric-encryption listener (AES payloads, option 2089).
"$tmp/coapdev" publish --mode symmetric --server 127.0.0.1:25682 --topic "/$pk/dev1/user/sym" --data '{"sym":true}' | tee "$tmp/sym"
grep -q 'code=2.04' "$tmp/sym"
# CoAP over DTLS-PSK (identity pk,dk,2,lifetime; no token).
"$tmp/coapdev" publish --dtls --server 127.0.0.1:25684 --topic "/$pk/dev1/user/dtls" --data '{"dtls":true}' | tee "$tmp/dtls"
grep -q 'code=2.04' "$tmp/dtls"
"$tmp/coapgate" messages "$pk" dev1 | tee "$tmp/msgs"
grep -q "/sys/$pk/dev1/thing/event/property/post" "$tmp/msgs"
grep -q "/$pk/dev1/user/sym" "$tmp/msgs"
grep -q "/$pk/dev1/user/dtls" "$tmp/msgs"
kill -TERM -- "-$pid"
wait "$pid" || true # `go run` may exit before the server has finished
for _ in $(seq 1 50); do grep -q 'msg=stopped' "$tmp/out" && break; sleep 0.2; done
pid=
grep -q 'msg=stopped' "$tmp/out" || { echo "server did not stop cleanly:"; cat "$tmp/out"; exit 1; }
echo "quick start OK"
