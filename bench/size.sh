#!/usr/bin/env bash
# The cache at 10k, 100k and 1M tiles (issue #21), run as `./bench/run.sh
# size`: for each size, tileproxy serve with a cache that holds every tile,
# filled through tileproxy (misses), then hits at random over all of them
# with wrk, round by round beside a bare net/http handler holding the same
# tiles in a map (benchtool synth-serve -as bare). Tiles are 4 KB on
# average, computed from their index (internal/testkit/synth).
#
# Origins: MinIO up to 100k tiles (the tiles are put there first, and a
# plain SDK client reading them back with the same 16 workers is the
# floor for misses); at 1M, and for the "third" instance at every size, a
# synthetic S3 endpoint that computes tiles (benchtool synth-serve -as
# s3), where the origin costs next to nothing and tileproxy is the limit.
#
# Per size it reports req/s, p50 and p99 of both servers and their ratios
# per round; GC cycles and GC CPU (from GODEBUG=gctrace=1, the collector's
# own accounting) as a share of the server's CPU over the wrk run; heap and
# memory-file bytes per cached byte; RSS plus the memory file against
# 1.3 x max_bytes + 50 MiB; the same for a cache with three times the room
# ("third": a third full), to show memory follows what is cached; misses
# per second and tileproxy's CPU per miss.
#
#   ./bench/run.sh size                  # ~20 minutes; writes bench/results/size.md
#   SIZES="10000 100000" ./bench/run.sh size
#   DURATION=20s ROUNDS=4 ./bench/run.sh size
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:$(go env GOPATH)/bin:/usr/sbin"
SIZES=${SIZES:-10000 100000 1000000}
DURATION=${DURATION:-15s}
ROUNDS=${ROUNDS:-4}
CONNS=${CONNS:-64}
MINIO_MAX=${MINIO_MAX:-100000}
PIN=${PIN:-$([ "$(nproc)" -ge 2 ] && echo 1 || echo 0)}
if [ "$PIN" = 1 ]; then
	SRV=(taskset -c 0)
	CLI=(taskset -c 1)
	WRK=(taskset -c 1 wrk -t1)
else
	SRV=() CLI=() WRK=(wrk -t2)
fi
command -v wrk >/dev/null || { echo "size.sh: need wrk (run ./bench/run.sh once, or apt-get install wrk)" >&2; exit 1; }

TMP=$(mktemp -d)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	TILEPROXY_MINIO_STATE="$TMP/minio" ./scripts/minio.sh stop >/dev/null 2>&1 || true
	rm -rf "$TMP"
}
trap cleanup EXIT
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
next_port=18300
alloc_port() {
	while ! port_free "$next_port"; do next_port=$((next_port + 1)); done
	printf -v "$1" '%s' "$next_port"
	next_port=$((next_port + 1))
}
wait_up() { for _ in $(seq 1 600); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "size.sh: $1 not up" >&2; exit 1; }
cputicks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)
stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

echo "== building" >&2
go build -o "$TMP/tileproxy" ./cmd/tileproxy
go build -o "$TMP/benchtool" ./bench/benchtool
SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export TILEPROXY_HMAC_SECRET=$SECRET
TOKEN=$("$TMP/tileproxy" token -tilesets '*' -ttl 12h)

# Tiles for MinIO: the largest size it serves, put once; smaller sizes
# read a prefix of the same pyramid.
MINIO_N=0
for n in $SIZES; do [ "$n" -le "$MINIO_MAX" ] && [ "$n" -gt "$MINIO_N" ] && MINIO_N=$n; done
if [ "$MINIO_N" -gt 0 ]; then
	echo "== MinIO, putting $MINIO_N tiles" >&2
	TILEPROXY_MINIO_STATE="$TMP/minio" ./scripts/minio.sh start >&2
	# shellcheck disable=SC1090
	source <(TILEPROXY_MINIO_STATE="$TMP/minio" ./scripts/minio.sh env)
	export MC_CONFIG_DIR="$TMP/mc"
	mc alias set b "$TILEPROXY_TEST_S3_ENDPOINT" "$TILEPROXY_TEST_S3_ACCESS_KEY" "$TILEPROXY_TEST_S3_SECRET_KEY" >/dev/null
	mc mb -q b/synth >/dev/null
	"$TMP/benchtool" synth-s3 -op put -n "$MINIO_N" -s3 "$TILEPROXY_TEST_S3_ENDPOINT" \
		-ak "$TILEPROXY_TEST_S3_ACCESS_KEY" -sk "$TILEPROXY_TEST_S3_SECRET_KEY" -bucket synth >"$TMP/put.txt"
fi

# start_tileproxy NAME N MAX_BYTES ENDPOINT: tileproxy serve on CPU 0 with
# the collector's trace on stderr; sets NAME_PID, NAME_URL, NAME_METRICS.
start_tileproxy() {
	local name=$1 maxb=$3 endpoint=$4 p m
	alloc_port p
	alloc_port m
	cat >"$TMP/$name.yaml" <<EOF
listen: "127.0.0.1:$p"
metrics_listen: "127.0.0.1:$m"
drain_delay: 0s
readiness_grace: 0s
log: {format: json, level: warn, access: false}
auth: {hmac_secret: "\${TILEPROXY_HMAC_SECRET}"}
s3: {endpoint: "$endpoint", use_path_style: true, max_in_flight: 64}
cache: {max_bytes: $maxb, max_object_bytes: 64KiB, ttl: 24h}
tilesets:
  - {name: synth, bucket: synth, prefix: t/, format: pbf, maxzoom: 14}
EOF
	GODEBUG=gctrace=1 "${SRV[@]}" "$TMP/tileproxy" serve -config "$TMP/$name.yaml" 2>"$TMP/$name.log" &
	PIDS+=($!)
	eval "${name}_PID=$! ${name}_URL=http://127.0.0.1:$p ${name}_METRICS=http://127.0.0.1:$m/metrics"
	wait_up "http://127.0.0.1:$p/healthz"
}

# memfile PID: what its memory files take (not mapped, so not in RSS), bytes.
memfile() {
	local kb=0 fd
	for fd in /proc/"$1"/fd/*; do
		case "$(readlink "$fd" 2>/dev/null)" in
		/memfd:*) kb=$((kb + $(stat -L -c '%b * %B / 1024' "$fd"))) ;;
		esac
	done
	echo $((kb * 1024))
}
# memory PID: RSS plus the memory files, bytes.
memory() { echo $(($(awk '/^VmRSS/ {printf "%.0f", $2 * 1024}' "/proc/$1/status") + $(memfile "$1"))); }
metric() { curl -fsS "$1" | awk -v n="$2" '$1 == n {printf "%.0f", $2}'; }

# fill NAME N: every tile once through tileproxy from 16 clients on CPU 1;
# prints "misses/s cpu-µs-per-miss".
fill() {
	local name=$1 n=$2 pid url before out
	pid=$(eval echo "\$${name}_PID")
	url=$(eval echo "\$${name}_URL")
	before=$(cputicks "$pid")
	out=$("${CLI[@]}" "$TMP/benchtool" synth-fill -n "$n" -proxy "$url" -token "$TOKEN")
	echo "$out" | awk -v t=$(($(cputicks "$pid") - before)) -v hz="$TICK" -v n="$n" '{printf "%s %.0f\n", $2, t * 1e6 / hz / n}'
}

cat >"$TMP/synth.lua" <<'EOF'
local n = tonumber(os.getenv("N"))
local headers = { Authorization = "Bearer " .. os.getenv("TOKEN") }
math.randomseed(os.time() + math.floor(os.clock() * 1e6))
request = function()
	local i, z, count = math.random(0, n - 1), 0, 1
	while i >= count do i = i - count; z = z + 1; count = count * 4 end
	local w = 2 ^ z
	return wrk.format("GET", string.format("/tiles/synth/%d/%d/%d.pbf", z, i % w, math.floor(i / w)), headers)
end
EOF

# gcwindow LOG FROM: cycles and collector CPU (ms) in the gctrace lines
# written to LOG past byte FROM.
gcwindow() {
	tail -c +"$(($2 + 1))" "$1" | awk '/^gc [0-9]+ @/ {
		n++
		for (i = 1; i <= NF; i++) if ($(i) == "cpu,") { split($(i-2), p, /[+\/]/); for (j in p) ms += p[j] }
	} END { printf "%d %.1f\n", n, ms }'
}

# wrkrun LABEL BASE PID N: "LABEL req/s p50µs p99µs non2xx cpu-ms gc-cycles gc-cpu-ms".
wrkrun() {
	local label=$1 base=$2 pid=$3 n=$4 log=$TMP/$1.log before t0 from
	from=$(stat -c %s "$log" 2>/dev/null || echo 0)
	before=$(cputicks "$pid")
	N=$n TOKEN=$TOKEN "${WRK[@]}" -c"$CONNS" -d"$DURATION" --latency -s "$TMP/synth.lua" "$base" >"$TMP/wrk.out"
	read -r cycles gcms < <(gcwindow "$log" "$from")
	awk -v l="$label" -v ticks=$(($(cputicks "$pid") - before)) -v hz="$TICK" -v cycles="$cycles" -v gcms="$gcms" '
		function us(v) { if (v ~ /us$/) return v + 0; if (v ~ /ms$/) return v * 1000; if (v ~ /s$/) return v * 1e6; return v }
		/Requests\/sec/ { rps = $2 }
		$1 == "50.000%" || $1 == "50%" { p50 = us($2) }
		$1 == "99.000%" || $1 == "99%" { p99 = us($2) }
		/Non-2xx/ { bad = $NF }
		END { printf "%s %.0f %.0f %.0f %d %.0f %d %.1f\n", l, rps, p50, p99, bad, ticks * 1000 / hz, cycles, gcms }' "$TMP/wrk.out"
}

: >"$TMP/rows"
: >"$TMP/sizes"
for n in $SIZES; do
	echo "== $n tiles" >&2
	# What the tiles take in the cache: class-rounded text and body and the
	# entry's bookkeeping, about 5 KiB a tile; max_bytes leaves 10% over.
	maxb=$((n * 5120 * 11 / 10))
	alloc_port sp
	"$TMP/benchtool" synth-serve -as s3 -n "$n" -listen "127.0.0.1:$sp" 2>/dev/null &
	synth_pid=$!
	PIDS+=($synth_pid)
	origin="http://127.0.0.1:$sp"
	sdk="-"
	if [ "$n" -le "$MINIO_MAX" ] && [ "$MINIO_N" -gt 0 ]; then
		origin=$TILEPROXY_TEST_S3_ENDPOINT
		export AWS_ACCESS_KEY_ID=$TILEPROXY_TEST_S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$TILEPROXY_TEST_S3_SECRET_KEY AWS_REGION=us-east-1
		sdk=$("${CLI[@]}" "$TMP/benchtool" synth-s3 -op get -n "$n" -s3 "$origin" -ak "$AWS_ACCESS_KEY_ID" -sk "$AWS_SECRET_ACCESS_KEY" -bucket synth | awk '{print $2 "|" $4}')
	else
		export AWS_ACCESS_KEY_ID=synth AWS_SECRET_ACCESS_KEY=synth AWS_REGION=us-east-1
	fi
	start_tileproxy full "$n" "$maxb" "$origin"
	read -r full_mps full_cpu < <(fill full "$n")
	objects=$(metric "$full_METRICS" tileproxy_cache_objects)
	[ "$objects" = "$n" ] || { echo "size.sh: $objects of $n tiles cached" >&2; exit 1; }
	alloc_port bp
	GODEBUG=gctrace=1 "${SRV[@]}" "$TMP/benchtool" synth-serve -as bare -n "$n" -listen "127.0.0.1:$bp" 2>"$TMP/bare.log" &
	bare_pid=$!
	PIDS+=($bare_pid)
	wait_up "http://127.0.0.1:$bp/tiles/synth/0/0/0.pbf"
	for round in $(seq 1 "$ROUNDS"); do
		pair=("bare|http://127.0.0.1:$bp|$bare_pid" "full|$full_URL|$full_PID")
		[ $((round % 2)) = 0 ] && pair=("${pair[1]}" "${pair[0]}")
		for r in "${pair[@]}"; do
			IFS='|' read -r label base pid <<<"$r"
			echo "$n $round $(wrkrun "$label" "$base" "$pid" "$n")" | tee -a "$TMP/rows" >&2
		done
	done
	full_mem=$(memory "$full_PID")
	bare_mem=$(memory "$bare_pid")
	heap=$(metric "$full_METRICS" go_memstats_heap_inuse_bytes)
	cached=$(metric "$full_METRICS" tileproxy_cache_bytes)
	file=$(memfile "$full_PID")
	stop_pid "$full_PID"
	stop_pid "$bare_pid"
	# The same tiles into a cache with three times the room, from the
	# synthetic origin: misses where tileproxy is the limit, and memory
	# for a cache a third full.
	export AWS_ACCESS_KEY_ID=synth AWS_SECRET_ACCESS_KEY=synth
	start_tileproxy third "$n" $((maxb * 3)) "http://127.0.0.1:$sp"
	read -r third_mps third_cpu < <(fill third "$n")
	third_mem=$(memory "$third_PID")
	stop_pid "$third_PID"
	stop_pid "$synth_pid"
	origin_name=MinIO
	[ "$sdk" = "-" ] && origin_name=synthetic
	echo "$n $maxb $cached $heap $file $full_mem $bare_mem $third_mem $origin_name $full_mps $full_cpu $sdk $third_mps $third_cpu" | tee -a "$TMP/sizes" >&2
done

# ratio N NUM DEN COL: geometric mean, lowest and highest over rounds of
# NUM's column over DEN's (rows: n round label req/s p50 p99 non2xx cpu cycles gcms).
ratio() {
	awk -v size="$1" -v num="$2" -v den="$3" -v col="$4" '$1 == size && $3 == num { a[$2] = $col } $1 == size && $3 == den { b[$2] = $col }
		END {
			lo = 1e9; hi = 0
			for (r in a) if (a[r] > 0 && b[r] > 0) { v = a[r] / b[r]; s += log(v); k++; if (v < lo) lo = v; if (v > hi) hi = v }
			if (k == 0) { print "- - -"; exit }
			printf "%.2f %.2f %.2f\n", exp(s / k), lo, hi
		}' "$TMP/rows"
}
mkdir -p bench/results
{
	echo "# tileproxy at 10k-1M cached tiles, $(date -u +%Y-%m-%dT%H:%MZ)"
	echo
	echo "$(nproc) cores, $(go version | awk '{print $3}'), wrk -c$CONNS -d$DURATION per run, $ROUNDS rounds (bare and tileproxy alternating, order flipped each round), servers on CPU 0 and wrk on CPU 1 when PIN=1 (here $PIN). Tiles 3-5 KB (4 KB mean), uniformly random over all N. \`./bench/run.sh size\` reproduces it."
	echo
	echo "## Hits against a bare net/http handler holding the same tiles"
	echo
	echo "Ratios are tileproxy over bare within a round: geometric mean (lowest-highest round)."
	echo
	echo "| tiles | req/s ratio | p50 ratio | p99 ratio | tileproxy GC cycles/s | tileproxy GC CPU | bare GC CPU |"
	echo "|---:|---:|---:|---:|---:|---:|---:|"
	for n in $SIZES; do
		read -r rq rql rqh < <(ratio "$n" full bare 4)
		read -r p5 p5l p5h < <(ratio "$n" full bare 5)
		read -r p9 p9l p9h < <(ratio "$n" full bare 6)
		gc=$(awk -v size="$n" -v l=full -v d="${DURATION%s}" '$1 == size && $3 == l { c += $9; g += $10; cpu += $8; k++ } END { printf "%.2f|%.1f%%", c / (k * d), (cpu > 0 ? 100 * g / cpu : 0) }' "$TMP/rows")
		bgc=$(awk -v size="$n" '$1 == size && $3 == "bare" { g += $10; cpu += $8 } END { printf "%.1f%%", (cpu > 0 ? 100 * g / cpu : 0) }' "$TMP/rows")
		echo "| $n | $rq ($rql-$rqh) | $p5 ($p5l-$p5h) | $p9 ($p9l-$p9h) | ${gc%%|*} | ${gc##*|} | $bgc |"
	done
	echo
	echo "GC CPU is the collector's CPU (gctrace: assist, background and idle mark, and the pauses) over the server's own CPU during the wrk runs."
	echo
	echo "## Memory and misses"
	echo
	echo "| tiles | max_bytes MiB | cached MiB | heap / cached | memory file / cached | RSS+file MiB | bound 1.3×max+50 MiB | bare RSS MiB | a third full: RSS+file MiB |"
	echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	awk '{ m = 1048576
		printf "| %d | %.0f | %.0f | %.3f | %.3f | %.0f | %.0f | %.0f | %.0f |\n", $1, $2 / m, $3 / m, $4 / $3, $5 / $3, $6 / m, (1.3 * $2 + 50 * m) / m, $7 / m, $8 / m }' "$TMP/sizes"
	echo
	echo "| tiles | misses from | misses/s | tileproxy CPU µs/miss | SDK client GETs/s | SDK client CPU µs/GET | beyond the SDK's, µs/miss | synthetic origin: misses/s | CPU µs/miss |"
	echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|"
	awk '{ split($12, sdk, "|")
		beyond = (sdk[2] == "" ? "-" : $11 - sdk[2])
		printf "| %d | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $9, $10, $11, (sdk[1] == "" ? "-" : sdk[1]), (sdk[2] == "" ? "-" : sdk[2]), beyond, $13, $14 }' "$TMP/sizes"
	echo
	echo "Misses: 16 clients on CPU 1 ask for every tile once. tileproxy's CPU per miss is its own process's CPU over the fill: the inbound request, the token, the cache, and the SDK's GetObject (signing, HTTP, parsing), not MinIO's work. The SDK client reads the same objects from MinIO with 16 workers and no tileproxy; \"beyond the SDK's\" is tileproxy's CPU per miss less the client's per GET."
	echo
	echo "Raw rounds (tiles round server req/s p50-µs p99-µs non-2xx cpu-ms gc-cycles gc-cpu-ms):"
	echo
	echo '```'
	cat "$TMP/rows"
	echo '```'
} >bench/results/size.md
cat bench/results/size.md
