#!/usr/bin/env bash
# The test command. On a fresh machine it installs what is missing (the
# pinned MinIO, mc and Helm, built with `go install` the first time;
# Debian's prometheus, docker-compose, chromium, haproxy and redis-server
# for the operations, browser, scale-out and limits tests), starts a
# throwaway MinIO and Redis on 127.0.0.1, runs gofmt, vet, staticcheck, `go test ./...` and the
# concurrent packages again under -race against them, and stops both again
# whatever happened.
#
#   ./scripts/test.sh                 everything, then each fuzz target for FUZZTIME
#   ./scripts/test.sh -run TestProxy  extra arguments go to `go test` (no fuzzing)
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
need_apt curl:curl promtool:prometheus prometheus:prometheus docker-compose:docker-compose chromium:chromium haproxy:haproxy redis-server:redis-server

# Helm, for the chart's lint, template and strict-decode tests: built from
# the module proxy the first time (a few minutes), as the README says.
if ! helm version --short 2>/dev/null | grep -q '^v3\.22'; then
	echo "test.sh: installing helm v3.22.0 (go install, first time only)" >&2
	GOFLAGS=-mod=mod go install helm.sh/helm/v3/cmd/helm@v3.22.0
fi

export TILEPROXY_MINIO_STATE="${TMPDIR:-/tmp}/tileproxy-minio-test-$$"
redis_pid=
cleanup() {
	./scripts/minio.sh stop
	if [ -n "$redis_pid" ]; then kill "$redis_pid" 2>/dev/null || true; fi
	rm -f "${testlog:-}"
}
trap cleanup EXIT
./scripts/minio.sh start
# A throwaway Redis for the limits store's tests (tests that stop and
# restart one start their own, on a free port).
if command -v redis-server >/dev/null 2>&1; then
	redis_port=${TILEPROXY_TEST_REDIS_PORT:-19379}
	redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no --loglevel warning >"${TMPDIR:-/tmp}/tileproxy-redis-test-$$.log" 2>&1 &
	redis_pid=$!
	for _ in $(seq 100); do
		redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
		sleep 0.1
	done
	redis-cli -p "$redis_port" ping >/dev/null
	export TILEPROXY_TEST_REDIS_ADDR="127.0.0.1:$redis_port"
fi
# shellcheck disable=SC1090
source <(./scripts/minio.sh env)

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt needed:" $unformatted >&2
	exit 1
fi
go vet ./...
go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
# The soak runs 2 minutes under CI, 60 s otherwise (TILEPROXY_SOAK=10m for
# longer); go test's timeout is the soak plus 20 minutes, so a long soak is
# not killed by the default 10.
if [ -n "${CI:-}" ]; then export TILEPROXY_SOAK="${TILEPROXY_SOAK:-2m}"; fi
soak=${TILEPROXY_SOAK:-60s}
case $soak in
[0-9]*h) [[ $soak =~ ^[0-9]+h$ ]] && soak_s=$(( ${soak%h} * 3600 )) ;;
[0-9]*m) [[ $soak =~ ^[0-9]+m$ ]] && soak_s=$(( ${soak%m} * 60 )) ;;
[0-9]*s) [[ $soak =~ ^[0-9]+s$ ]] && soak_s=${soak%s} ;;
esac
timeout=$(( ${soak_s:-3600} + 1200 ))s
testlog=$(mktemp)
if ! go test -count=1 -timeout "$timeout" "$@" ./... 2>&1 | tee "$testlog"; then
	# Debian's Chromium has, rarely, died of a signal (a segfault) under
	# this shared machine's load: not tileproxy's failure. When that is
	# the only package failing, the browser tests run once more and their
	# second run counts. Any other failure stands.
	failed=$(grep -c $'^FAIL\t' "$testlog" || true)
	if [ $# -eq 0 ] && [ "$failed" = 1 ] && grep -q $'^FAIL\tgithub.com/tileproxy/tileproxy/test/e2e\t' "$testlog" &&
		grep -q 'browser process exited: signal' "$testlog"; then
		echo "test.sh: Chromium died of a signal; running test/e2e once more" >&2
		go test -count=1 -timeout "$timeout" ./test/e2e
	else
		exit 1
	fi
fi
# The concurrent packages once more under the race detector (the soak and
# the browser tests are left out: they test the binary and the browser).
if [ $# -eq 0 ]; then
	go test -race -count=1 -timeout "$timeout" ./auth ./cache ./origin ./proxy ./proxy/core ./config \
		./cache/internal/memfile ./cache/internal/arena ./internal/coalesce ./internal/logbuf ./internal/accesslog ./warm ./cmd/tileproxy ./area ./scope ./internal/mvt ./exfil ./revoke ./internal/store ./audit ./internal/certs ./internal/testkit/delayproxy ./internal/workers ./internal/h2c
fi

# Each fuzz target for a bounded time (FUZZTIME, default 15s; FUZZTIME=0 skips).
# A crash fails the run and leaves its input in testdata/fuzz/ as a regression seed.
FUZZTIME=${FUZZTIME:-15s}
if [ "$FUZZTIME" != 0 ] && [ $# -eq 0 ]; then
	for target in proxy:FuzzCheckPath proxy:FuzzTilePathIsolation auth:FuzzVerify auth:FuzzTokenFromRequest auth:FuzzSessionCookie auth:FuzzIssuerClaims config:FuzzParse internal/accesslog:FuzzMatchesSlog internal/accesslog:FuzzRedactTokens proxy/core:FuzzDecide internal/archive:FuzzDirectory internal/archive:FuzzHeader auth:FuzzScopeClaim internal/mvt:FuzzFilter audit:FuzzLine; do
		pkg=${target%%:*} fn=${target#*:}
		log="${TMPDIR:-/tmp}/fuzz-$fn.log"
		echo "fuzz: $fn ($FUZZTIME)"
		for attempt in 1 2; do
			go test -run '^$' -fuzz "^$fn\$" -fuzztime "$FUZZTIME" "./$pkg" >"$log" 2>&1 && break
			# Go 1.26's fuzz coordinator can fail a target with a bare
			# "context deadline exceeded" when -fuzztime ends (golang/go#75804,
			# fixed in 1.27): no input failed and no crasher was written.
			# That, and only that, is run once more; anything else fails.
			if [ "$attempt" = 1 ] && grep -q '^    context deadline exceeded$' "$log" &&
				! grep -q 'Failing input written to' "$log"; then
				echo "fuzz: $fn stopped by golang/go#75804 at the deadline (no failing input); once more"
				continue
			fi
			cat "$log"
			exit 1
		done
		tail -n 3 "$log" | grep -E '^(ok|PASS)' || true
	done
fi
