#!/usr/bin/env bash
# Cache hits with a quota and sweep detection on, on the memory store and
# on a real Redis on loopback, beside the same hits with them off, in one
# run (proxy.BenchmarkExfil, interleaved). Starts a throwaway redis-server
# (Debian's) on 127.0.0.1 and stops it again.
#
#   ./bench/exfil.sh     # ~1 minute; writes bench/results/<date>-exfil.txt
set -euo pipefail
cd "$(dirname "$0")/.."
port=${REDIS_PORT:-19479}
redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no --loglevel warning >/dev/null 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
out=bench/results/$(date -u +%F)-exfil.txt
{
	date -u
	go version
	redis-server --version
	for _ in 1 2 3; do
		TILEPROXY_TEST_REDIS_ADDR=127.0.0.1:$port go test -run '^$' -bench '^BenchmarkExfil$' -benchtime 1x ./proxy | grep -v '^\(goos\|goarch\|pkg\|cpu\|PASS\|ok\)'
	done
} | tee "$out"
