#!/usr/bin/env bash
# The test command. On a fresh machine it installs what is missing (the
# pinned MinIO and mc, built with `go install` the first time; Debian's
# prometheus, docker-compose and chromium for the operations and browser
# tests), starts a
# throwaway MinIO on 127.0.0.1, runs gofmt/vet and `go test ./...` against
# it, and stops MinIO again whatever happened.
#
#   ./scripts/test.sh                 everything
#   ./scripts/test.sh -run TestProxy  extra arguments go to `go test`
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:$(go env GOPATH)/bin"

# Debian tools some tests drive: installed when missing (as root, as on
# CI); otherwise those tests skip locally and fail under CI=true.
need_apt() { # command:package ...
	local missing=() pair
	for pair in "$@"; do
		command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ "$(id -u)" = 0 ]; then
		echo "test.sh: installing ${missing[*]}" >&2
		apt-get update -qq >/dev/null
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	else
		echo "test.sh: missing ${missing[*]} (sudo apt-get install ${missing[*]})" >&2
	fi
}
need_apt promtool:prometheus prometheus:prometheus docker-compose:docker-compose chromium:chromium

export TILEPROXY_MINIO_STATE="${TMPDIR:-/tmp}/tileproxy-minio-test-$$"
trap './scripts/minio.sh stop' EXIT
./scripts/minio.sh start
# shellcheck disable=SC1090
source <(./scripts/minio.sh env)

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt needed:" $unformatted >&2
	exit 1
fi
go vet ./...
go test -count=1 "$@" ./...
