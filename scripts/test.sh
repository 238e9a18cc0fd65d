#!/usr/bin/env bash
# The test command of the README: installs what the tests need on a Debian
# machine (libcoap's coap-client builds and openssl for the interop tests,
# plain and DTLS), then runs vet and
# every Go test. Tests whose outside peer is missing skip and say why.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
{ command -v coap-client-notls && command -v coap-client-openssl && command -v coap-client-gnutls; } >/dev/null 2>&1 || need+=(libcoap3-bin)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v curl >/dev/null 2>&1 || need+=(curl)
# native DTLS engine interop: gnutls-cli, and an mbedTLS client built with gcc
command -v gnutls-cli >/dev/null 2>&1 || need+=(gnutls-bin)
{ command -v gcc && [ -e /usr/include/mbedtls/ssl.h ]; } >/dev/null 2>&1 || need+=(gcc libmbedtls-dev)
command -v chromium >/dev/null 2>&1 || need+=(chromium) # the web console's browser tests
if ((${#need[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "warning: missing ${need[*]} (not root or no apt-get); the interop tests will skip" >&2
  fi
fi

go vet ./...
go test -count=1 -timeout 8m ./...
