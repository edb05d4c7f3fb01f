#!/usr/bin/env bash
# S3 GETs and hit ratios for 1, 2, 3 and 5 tileproxy replicas behind
# HAProxy, routed by a consistent hash of the path and by round robin, for
# one fixed Zipf-skewed sequence of 4,000 requests over 400 tiles. Counts,
# not times: GETs are what MinIO reports serving. Writes results/scale.md.
#
#   ./bench/scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:$(go env GOPATH)/bin"
if ! command -v haproxy >/dev/null; then
	[ "$(id -u)" = 0 ] || { echo "scale.sh: need haproxy (sudo apt-get install haproxy)" >&2; exit 1; }
	apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy >/dev/null
fi
export TILEPROXY_MINIO_STATE="${TMPDIR:-/tmp}/tileproxy-minio-scale-$$"
trap './scripts/minio.sh stop' EXIT
./scripts/minio.sh start
# shellcheck disable=SC1090
source <(./scripts/minio.sh env)
out=$(go test -run '^$' -bench '^BenchmarkScaleOut$' -benchtime 1x ./cmd/tileproxy)
echo "$out" >&2
{
	echo "# Scale-out: S3 GETs and hit ratio by replica count, $(date -u +%Y-%m-%dT%H:%MZ)"
	echo
	echo "4,000 requests, Zipf-skewed (s=1.1) over 400 tiles, through HAProxy 2.6 to fresh replicas;"
	echo "GETs as counted by MinIO. \`./bench/scale.sh\` reproduces it."
	echo
	echo "| routing | replicas | S3 GETs | hit ratio | distinct tiles asked |"
	echo "|---|---:|---:|---:|---:|"
	echo "$out" | awk '/^BenchmarkScaleOut\// {
		split($1, p, "/"); mode = p[2]; sub(/replicas=/, "", p[3]); sub(/-[0-9]+$/, "", p[3])
		g = ""; h = ""; d = ""
		for (i = 2; i <= NF; i++) {
			if ($(i) == "s3_gets") g = $(i-1)
			if ($(i) == "hit_ratio") h = $(i-1)
			if ($(i) == "distinct_tiles") d = $(i-1)
		}
		printf "| %s | %s | %d | %.3f | %d |\n", mode, p[3], g, h, d
	}'
} >bench/results/scale.md
cat bench/results/scale.md
