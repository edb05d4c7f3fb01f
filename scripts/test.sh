#!/usr/bin/env bash
# The test command. On a fresh machine it installs what is missing (the
# pinned MinIO and mc, built with `go install` the first time), starts a
# throwaway MinIO on 127.0.0.1, runs gofmt/vet and `go test ./...` against
# it, and stops MinIO again whatever happened.
#
#   ./scripts/test.sh                 everything
#   ./scripts/test.sh -run TestProxy  extra arguments go to `go test`
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:$(go env GOPATH)/bin"

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
