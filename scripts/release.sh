#!/usr/bin/env bash
# Release build: static binaries (CGO_ENABLED=0, pure-Go SQLite) of coapgate
# and coapdev for linux/amd64 and linux/arm64, with the version and VCS
# revision stamped (printed by `coapgate version`).
#
#   scripts/release.sh [VERSION]          # default: git describe, else "devel"
#   OUT=dist PLATFORMS="linux/arm64" scripts/release.sh v1.2.3
#   REVISION=<commit> overrides the revision read from git; NO_ARCHIVE=1 skips
#   the .tar.gz files and SHA256SUMS.
#
# Output: $OUT/coapgate_VERSION_OS_ARCH/{coapgate,coapdev,LICENSE,README.md,
# coapgate.example.yaml,coapgate.service}, a .tar.gz of it, and SHA256SUMS.
# The Dockerfile runs this script too, so images hold the same binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-$(git describe --tags --always --dirty 2>/dev/null || echo devel)}
revision=${REVISION:-$(git rev-parse HEAD 2>/dev/null || true)}
out=${OUT:-dist}
platforms=${PLATFORMS:-linux/amd64 linux/arm64}
pkg=github.com/coapgate/coapgate/internal/buildinfo
ldflags="-s -w -X $pkg.version=$version -X $pkg.revision=$revision"
mkdir -p "$out"
for p in $platforms; do
  os=${p%/*} arch=${p#*/}
  dir=$out/coapgate_${version}_${os}_${arch}
  rm -rf "$dir"; mkdir -p "$dir"
  for cmd in coapgate coapdev; do
    CGO_ENABLED=0 GOOS=$os GOARCH=$arch go build -trimpath -ldflags "$ldflags" -o "$dir/$cmd" "./cmd/$cmd"
  done
  cp LICENSE README.md deploy/coapgate.example.yaml deploy/coapgate.service "$dir/"
  if [ -z "${NO_ARCHIVE:-}" ]; then
    tar -C "$out" -czf "$dir.tar.gz" "$(basename "$dir")"
  fi
  echo "built $dir"
done
if [ -z "${NO_ARCHIVE:-}" ]; then
  (cd "$out" && sha256sum -- *.tar.gz >SHA256SUMS)
fi
