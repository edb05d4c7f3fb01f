#!/usr/bin/env bash
# HTTP/2 over TLS, side by side in one run (cmd/tileproxy's
# BenchmarkH2Load and BenchmarkMapView): the same 256 tiles (zoom 4) from
# tileproxy's cache, from nginx (http2, one worker, files) and, for
# h2load, from a bare net/http HTTP/2 server; then real Chromium loading
# a page of the 256 tiles through a delay proxy of 25 ms each way.
#
#   ./bench/http2.sh     # ~3 minutes; writes bench/results/<date>-http2.txt
#   BENCH_ROUNDS=7 BENCH_STREAMS=1000 BENCH_DELAY_MS=25 BENCH_REQUESTS=200000 ./bench/http2.sh
#
# With two cores or more the servers run on CPU 0 and h2load on CPU 1.
# Needs root for apt-get (nginx-light, nghttp2-client, chromium) the first
# time.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:$(go env GOPATH)/bin:/usr/sbin"
need() { # command package
	command -v "$1" >/dev/null 2>&1 && return 0
	[ "$(id -u)" = 0 ] || { echo "http2.sh: need $2 (sudo apt-get install $2)" >&2; exit 1; }
	apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
}
need nginx nginx-light
need h2load nghttp2-client
need chromium chromium
bin=$(mktemp)
trap 'rm -f "$bin"' EXIT
go test -c -o "$bin" ./cmd/tileproxy
pin=()
if [ "$(nproc)" -ge 2 ]; then
	pin=(taskset -c 0)
	export BENCH_CLIENT_CPU=1
fi
out=bench/results/$(date -u +%F)-http2.txt
{
	date -u
	go version
	nginx -v 2>&1
	h2load --version | head -1
	chromium --version 2>/dev/null || true
	echo "streams per connection: ${BENCH_STREAMS:-250}, delay ${BENCH_DELAY_MS:-25} ms each way"
	(cd cmd/tileproxy && "${pin[@]}" "$bin" -test.run '^$' -test.bench '^BenchmarkH2Load$' -test.benchtime 1x 2>&1)
	# Chromium is not pinned: the map view is bound by latency, not CPU.
	(cd cmd/tileproxy && unset BENCH_CLIENT_CPU && "$bin" -test.run '^$' -test.bench '^BenchmarkMapView$' -test.benchtime 1x 2>&1)
} | grep -v '^\(goos\|goarch\|pkg\|cpu\|PASS\)' | tee "$out"
