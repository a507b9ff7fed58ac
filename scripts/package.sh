#!/usr/bin/env bash
# Builds the gemba-agent .deb and .rpm packages with nfpm (pinned, run with `go run`, not in go.mod).
#   ARCHS="amd64 arm64"  FORMATS="deb rpm"  OUT=dist  VERSION=v0.1.0  COMMIT=abc1234
# Writes OUT/gemba-agent_<version>_<arch>.deb and OUT/gemba-agent-<version>-1.<arch>.rpm.
set -euo pipefail
cd "$(dirname "$0")/.."

NFPM_VERSION=${NFPM_VERSION:-v2.45.2}
NFPM=${NFPM:-go run github.com/goreleaser/nfpm/v2/cmd/nfpm@${NFPM_VERSION}}
ARCHS=${ARCHS:-amd64 arm64}
FORMATS=${FORMATS:-deb rpm}
OUT=${OUT:-dist}
VERSION=${VERSION:-v$(cat VERSION)}
COMMIT=${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
GO=${GO:-go}

# Packages take a plain semantic version: deb and rpm refuse the leading v.
export GEMBA_VERSION=${VERSION#v}
ldflags="-s -w -X github.com/gemba-io/gemba/agent.Version=${VERSION} -X github.com/gemba-io/gemba/agent.Commit=${COMMIT}"
mkdir -p "$OUT"
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT

for arch in $ARCHS; do
	mkdir -p "$build/$arch"
	CGO_ENABLED=0 GOOS=linux GOARCH=$arch $GO build -trimpath -ldflags "$ldflags" -o "$build/$arch/gemba-agent" ./cmd/gemba-agent
	for format in $FORMATS; do
		# GEMBA_ARCH, not GOARCH: `go run` would build nfpm itself for the target architecture.
		GEMBA_ARCH=$arch GEMBA_BIN="$build/$arch/gemba-agent" $NFPM package --config deploy/nfpm.yaml --packager "$format" --target "$OUT/"
	done
done
ls -l "$OUT"
