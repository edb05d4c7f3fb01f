#!/usr/bin/env bash
# Side-by-side benchmark, one run, loopback only, every load bounded:
# nginx (static files, 1 worker), a bare Go net/http handler, and tileproxy
# (hits with HS256 / ES256 header tokens and a cookie; misses vs direct SDK
# GETs; a thundering herd; RSS after pushing 5x max_bytes through the cache).
#
#   ./bench/run.sh            # ~7.5 minutes; prints a table and writes bench/results/latest.md
#   DURATION=30s ./bench/run.sh
#   PIN=0 ./bench/run.sh      # servers and wrk share every core (the old way)
#   ./bench/run.sh size       # the cache at 10k, 100k and 1M tiles (bench/size.sh)
#   ./bench/run.sh exfil      # hits with quota and sweep on, memory and Redis (bench/exfil.sh)
#   ./bench/run.sh http2      # HTTP/2 over TLS: h2load and Chromium against nginx (bench/http2.sh)
#
# Needs root for apt-get (wrk, nginx-light) the first time, and the pinned
# MinIO (scripts/minio.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = size ]; then exec ./bench/size.sh; fi
if [ "${1:-}" = exfil ]; then exec ./bench/exfil.sh; fi
if [ "${1:-}" = http2 ]; then exec ./bench/http2.sh; fi
export PATH="$PATH:/usr/local/go/bin:$(go env GOPATH)/bin:/usr/sbin"
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
ROUNDS=${ROUNDS:-4}
# With two cores or more, every server under load runs on CPU 0 and wrk on
# CPU 1 (one thread): req/s then measures the server, not how it and wrk
# happened to share the cores. On the shared 2-core box rounds agreed to
# 0.1-3% this way against 10-50% unpinned, and what a client pays to
# receive (reading the body's pages, which sendfile leaves to the
# receiver) stays on the client's core, as it would on a client machine.
PIN=${PIN:-$([ "$(nproc)" -ge 2 ] && echo 1 || echo 0)}
if [ "$PIN" = 1 ]; then
	SRV=(taskset -c 0)
	WRK=(taskset -c 1 wrk -t1)
else
	SRV=()
	WRK=(wrk -t2)
fi

need() { # command package
	command -v "$1" >/dev/null 2>&1 && return 0
	[ "$(id -u)" = 0 ] || { echo "run.sh: need $2 (sudo apt-get install $2)" >&2; exit 1; }
	apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
}
need wrk wrk
need nginx nginx-light
# go-pmtiles' own server, the peer for archive tilesets.
PMTILES=$(go env GOPATH)/bin/go-pmtiles
[ -x "$PMTILES" ] || go install github.com/protomaps/go-pmtiles@v1.31.2

TMP=$(mktemp -d)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	[ -f "$TMP/nginx.pid" ] && kill "$(cat "$TMP/nginx.pid")" 2>/dev/null || true
	TILEPROXY_MINIO_STATE="$TMP/minio" ./scripts/minio.sh stop || true
	rm -rf "$TMP"
}
trap cleanup EXIT

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
next_port=18100
# alloc_port VAR: the next free port into VAR (no subshell, so the counter moves).
alloc_port() {
	while ! port_free "$next_port"; do next_port=$((next_port + 1)); done
	printf -v "$1" '%s' "$next_port"
	next_port=$((next_port + 1))
}
wait_up() { for _ in $(seq 1 100); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "run.sh: $1 not up" >&2; exit 1; }

echo "== building" >&2
go build -o "$TMP/tileproxy" ./cmd/tileproxy
go build -o "$TMP/benchtool" ./bench/benchtool
"$TMP/benchtool" gentiles -out "$TMP/data" -n 2048 >"$TMP/tiles.txt"
# The same tiles as one PMTiles archive (leaf directories, gzip'd), and
# their URLs on the archive tileset and on go-pmtiles serve.
mkdir -p "$TMP/pm"
"$TMP/benchtool" pmtiles -dir "$TMP/data" -out "$TMP/pm/demo.pmtiles" >&2
sed 's#^/tiles/demo/#/tiles/pm/#' "$TMP/data/urls.txt" >"$TMP/data/urls-pm.txt"
sed 's#^/tiles/demo/#/demo/#' "$TMP/data/urls.txt" >"$TMP/data/urls-serve.txt"
chmod 755 "$TMP" && chmod -R a+rX "$TMP/data" # nginx's worker runs as www-data
cat "$TMP/tiles.txt" >&2

echo "== MinIO" >&2
TILEPROXY_MINIO_STATE="$TMP/minio" ./scripts/minio.sh start
# shellcheck disable=SC1090
source <(TILEPROXY_MINIO_STATE="$TMP/minio" ./scripts/minio.sh env)
export MC_CONFIG_DIR="$TMP/mc"
mc alias set b "$TILEPROXY_TEST_S3_ENDPOINT" "$TILEPROXY_TEST_S3_ACCESS_KEY" "$TILEPROXY_TEST_S3_SECRET_KEY" >/dev/null
mc mb -q b/bench >/dev/null
mc cp -q --recursive "$TMP/data/tiles/" b/bench/tiles/ >/dev/null
mc cp -q "$TMP/pm/demo.pmtiles" b/bench/archives/demo.pmtiles >/dev/null
# 330 distinct 1 MiB objects: over 5x a 64 MiB cache.
mkdir -p "$TMP/fill"
for i in $(seq 0 329); do head -c 1048576 /dev/urandom >"$TMP/fill/$i.bin"; done
mc cp -q --recursive "$TMP/fill/" b/bench/fill/ >/dev/null
rm -rf "$TMP/fill"

SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export TILEPROXY_HMAC_SECRET=$SECRET
export AWS_ACCESS_KEY_ID=$TILEPROXY_TEST_S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$TILEPROXY_TEST_S3_SECRET_KEY
HS=$("$TMP/tileproxy" token -tilesets '*' -ttl 2h)
ES=$("$TMP/benchtool" token -key testdata/keys/ec.pem)

# tileproxy INSTANCE MAX_BYTES ACCESS_LOG: start one with its own config.
start_tileproxy() {
	local name=$1 maxb=$2 access=$3 p m maxobj=4MiB
	alloc_port p
	alloc_port m
	[ "$maxb" = 0 ] && maxobj=0
	cat >"$TMP/$name.yaml" <<EOF
listen: "127.0.0.1:$p"
metrics_listen: "127.0.0.1:$m"
public_url: "http://127.0.0.1:$p"
drain_delay: 0s
log: {format: json, level: info, access: $access} # access lines really written, as nginx's are
auth:
  hmac_secret: "\${TILEPROXY_HMAC_SECRET}"
  public_keys: ["$PWD/testdata/keys/ec.pub.pem"]
  algorithms: [HS256, ES256]
s3:
  endpoint: "$TILEPROXY_TEST_S3_ENDPOINT"
  use_path_style: true
cache: {max_bytes: $maxb, max_object_bytes: $maxobj, ttl: 1h}
tilesets:
  - {name: demo, bucket: bench, prefix: tiles/demo/, maxzoom: 6}
  - {name: fill, bucket: bench, prefix: fill/}
  - {name: pm, bucket: bench, archive: archives/demo.pmtiles}
EOF
	"${SRV[@]}" "$TMP/tileproxy" serve -config "$TMP/$name.yaml" 2>"$TMP/$name.log" &
	PIDS+=($!)
	eval "${name}_PID=$! ${name}_URL=http://127.0.0.1:$p ${name}_METRICS=http://127.0.0.1:$m/metrics"
	wait_up "http://127.0.0.1:$p/healthz"
}

echo "== servers" >&2
alloc_port NGINX_PORT
cat >"$TMP/nginx.conf" <<EOF
worker_processes 1;
daemon on;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log;
events { worker_connections 4096; }
http {
  include /etc/nginx/mime.types;
  access_log $TMP/nginx-access.log;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $TMP/data;
    location /tiles/ { add_header Cache-Control "private, max-age=3600"; }
  }
}
EOF
"${SRV[@]}" nginx -c "$TMP/nginx.conf" -p "$TMP" || { cat "$TMP/nginx-error.log" >&2; exit 1; }
alloc_port BARE_PORT
"${SRV[@]}" "$TMP/benchtool" bare -dir "$TMP/data" -listen "127.0.0.1:$BARE_PORT" 2>/dev/null &
BARE_PID=$!
PIDS+=($!)
wait_up "http://127.0.0.1:$BARE_PORT/tiles/demo/6/0/0.png"
wait_up "http://127.0.0.1:$NGINX_PORT/tiles/demo/6/0/0.png"
alloc_port SERVE_PORT
"${SRV[@]}" "$PMTILES" serve "$TMP/pm" --interface 127.0.0.1 --port "$SERVE_PORT" 2>"$TMP/pmtiles-serve.log" &
SERVE_PID=$!
PIDS+=($!)
wait_up "http://127.0.0.1:$SERVE_PORT/demo/6/0/0.png"
NGINX_WORKER=$(pgrep -P "$(cat "$TMP/nginx.pid")" | head -1)
start_tileproxy hit 512MiB true
start_tileproxy nolog 512MiB false
start_tileproxy cold 0 true
start_tileproxy small 64MiB true

cat >"$TMP/mix.lua" <<'EOF'
local urls = {}
for line in io.lines(os.getenv("URLS")) do urls[#urls + 1] = line end
local name, value = os.getenv("HDR_NAME"), os.getenv("HDR_VALUE")
local headers = {}
if name and name ~= "" then headers[name] = value end
math.randomseed(os.time() + math.floor(os.clock() * 1e6))
request = function() return wrk.format("GET", urls[math.random(#urls)], headers) end
EOF
DEFAULT_URLS="$TMP/data/urls.txt"
export URLS=$DEFAULT_URLS

# cputicks PID: user+system CPU the process has used, in clock ticks.
cputicks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

# wrkrun LABEL BASE PID [HEADER VALUE]: prints "LABEL req/s p50ms p99ms
# non2xx cpu-us/req". CPU per request is the server's own CPU time over the
# run divided by the requests served: on a shared 2-core box it moves far
# less than req/s, which also depends on what wrk and the neighbours got.
wrkrun() {
	local label=$1 base=$2 pid=$3 before after t0 t1
	HDR_NAME=${4:-} HDR_VALUE=${5:-} "${WRK[@]}" -c"$CONNS" -d3s -s "$TMP/mix.lua" "$base" >/dev/null # warm caches
	before=$(cputicks "$pid")
	t0=$(date +%s.%N)
	HDR_NAME=${4:-} HDR_VALUE=${5:-} "${WRK[@]}" -c"$CONNS" -d"$DURATION" --latency -s "$TMP/mix.lua" "$base" >"$TMP/$label.wrk"
	after=$(cputicks "$pid")
	t1=$(date +%s.%N)
	awk -v l="$label" -v ticks=$((after - before)) -v hz="$TICK" -v secs="$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')" '
		function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
		/requests in/ { n = $1 }
		/Requests\/sec/ { rps = $2 }
		$1 == "50.000%" || $1 == "50%" { p50 = ms($2) }
		$1 == "99.000%" || $1 == "99%" { p99 = ms($2) }
		/Non-2xx/ { bad = $NF }
		END { printf "%s %.0f %.3f %.3f %s %.1f %.0f\n", l, rps, p50, p99, (bad == "" ? 0 : bad), ticks * 1e6 / hz / n, 100 * ticks / hz / secs }' "$TMP/$label.wrk"
}

# Each row runs ROUNDS times, forward then backward through the list so
# drift in what the neighbours take cancels out; the table keeps each
# row's best round (highest req/s) and says how far apart rounds were.
# nginx and the bare handler get the same requests as tileproxy-hs256,
# token header included, and ignore it: the ratios then compare what the
# servers do with one request, not how long the requests are. bare-notoken
# shows what receiving the header costs (~1 µs of header parsing).
runs=(
	"nginx|http://127.0.0.1:$NGINX_PORT|$NGINX_WORKER|Authorization|Bearer $HS"
	"bare|http://127.0.0.1:$BARE_PORT|$BARE_PID|Authorization|Bearer $HS"
	"bare-notoken|http://127.0.0.1:$BARE_PORT|$BARE_PID||"
	"tileproxy-hs256|$hit_URL|$hit_PID|Authorization|Bearer $HS"
	"tileproxy-es256|$hit_URL|$hit_PID|Authorization|Bearer $ES"
	"tileproxy-cookie|$hit_URL|$hit_PID|Cookie|__Host-tileproxy_token=$HS"
	"tileproxy-hs256-noaccesslog|$nolog_URL|$nolog_PID|Authorization|Bearer $HS"
	# The same tiles from one PMTiles archive: tileproxy (cached, like the
	# hs256 row) and go-pmtiles serve (no auth, no tile cache) as a peer.
	"tileproxy-pmtiles|$hit_URL|$hit_PID|Authorization|Bearer $HS|$TMP/data/urls-pm.txt"
	"go-pmtiles-serve|http://127.0.0.1:$SERVE_PORT|$SERVE_PID|Authorization|Bearer $HS|$TMP/data/urls-serve.txt"
)
echo "== load: $CONNS connections, $DURATION each, $ROUNDS rounds" >&2
: >"$TMP/allrows"
: >"$TMP/byround"
for round in $(seq 1 "$ROUNDS"); do
	order=("${runs[@]}")
	if [ $((round % 2)) = 0 ]; then
		order=()
		for ((i = ${#runs[@]} - 1; i >= 0; i--)); do order+=("${runs[$i]}"); done
	fi
	for r in "${order[@]}"; do
		IFS='|' read -r label base pid hname hvalue urls <<<"$r"
		URLS=${urls:-$DEFAULT_URLS} wrkrun "$label" "$base" "$pid" "$hname" "$hvalue" | tee -a "$TMP/allrows" >&2
		echo "$round $(tail -n 1 "$TMP/allrows")" >>"$TMP/byround"
	done
done
# Every ratio pairs two rows' runs in the same round and averages the
# per-round ratios (geometrically). Rounds go forwards then backwards, so
# over an even number of rounds each row runs after the other as often
# as before it, and a trend in what the neighbours take cancels out of
# the mean instead of landing on one side. Single runs move 10-20% with
# the neighbours, p99 more than req/s: one row's best round against
# another's can catch a quiet minute for one and not the other.
# ratio NUM DEN COL: "mean lowest highest" of NUM's column COL over DEN's
# (columns of byround: round label req/s p50 p99 non2xx cpu busy).
ratio() {
	awk -v num="$1" -v den="$2" -v col="$3" '$2 == num { a[$1] = $col } $2 == den { b[$1] = $col }
		END {
			lo = 1e9; hi = 0
			for (r in a) if (a[r] > 0 && b[r] > 0) { v = a[r] / b[r]; s += log(v); n++; if (v < lo) lo = v; if (v > hi) hi = v }
			if (n == 0) { print "0 0 0"; exit }
			printf "%.2f %.2f %.2f\n", exp(s / n), lo, hi
		}' "$TMP/byround"
}
# ratiorow NAME NUM DEN COL: one line of the ratios table, tab-separated.
# shellcheck disable=SC2046 # ratio's three words are printf's last three arguments
ratiorow() { printf '%s\t%s\t%s\t%s\n' "$1" $(ratio "$2" "$3" "$4"); }
{
	ratiorow "req/s hs256/bare" tileproxy-hs256 bare 3
	ratiorow "req/s es256/bare" tileproxy-es256 bare 3
	ratiorow "req/s cookie/bare" tileproxy-cookie bare 3
	ratiorow "req/s hs256-noaccesslog/bare" tileproxy-hs256-noaccesslog bare 3
	ratiorow "req/s hs256/nginx" tileproxy-hs256 nginx 3
	ratiorow "req/s bare/nginx" bare nginx 3
	ratiorow "p99 hs256/bare" tileproxy-hs256 bare 5
	ratiorow "p99 cookie/bare" tileproxy-cookie bare 5
	ratiorow "p99 hs256/nginx" tileproxy-hs256 nginx 5
	ratiorow "CPU per request bare/hs256" bare tileproxy-hs256 7
	ratiorow "CPU per request bare/cookie" bare tileproxy-cookie 7
	ratiorow "req/s pmtiles/hs256" tileproxy-pmtiles tileproxy-hs256 3
	ratiorow "req/s pmtiles/go-pmtiles-serve" tileproxy-pmtiles go-pmtiles-serve 3
	ratiorow "p99 pmtiles/hs256" tileproxy-pmtiles tileproxy-hs256 5
} >"$TMP/ratios"
# Best round per row, in the list's order; spread = worst/best req/s.
for r in "${runs[@]}"; do
	label=${r%%|*}
	awk -v l="$label" '$1 == l { if (!seen || $2 > best) { best = $2; line = $0 }; if (!seen || $2 < worst) worst = $2; seen = 1 }
		END { print line, (best > 0 ? worst / best : 0) }' "$TMP/allrows"
done >"$TMP/rows"

echo "== misses, herd, memory" >&2
read -r MP50 MP99 DP50 DP99 < <("$TMP/benchtool" miss -proxy "$cold_URL" -token "$HS" -s3 "$TILEPROXY_TEST_S3_ENDPOINT" \
	-ak "$AWS_ACCESS_KEY_ID" -sk "$AWS_SECRET_ACCESS_KEY" -bucket bench -urls "$URLS" -n 400)
COLD_PM=$("$TMP/benchtool" coldtiles -proxy "$small_URL" -metrics "$small_METRICS" -token "$HS" -urls "$TMP/data/urls-pm.txt" -n 200)
HERD=$("$TMP/benchtool" herd -proxy "$small_URL" -metrics "$small_METRICS" -token "$HS" -path /tiles/demo/6/63/31.png -n 200)
"$TMP/benchtool" fill -proxy "$small_URL" -token "$HS" -n 330
RSS_KB=$(awk '/^VmRSS/ {print $2}' "/proc/$small_PID/status")
# The cache keeps bodies of 8 KiB and more in a memory file (memfd), which
# VmRSS does not show as it is not mapped: count what it takes too.
FILE_KB=0
for fd in /proc/"$small_PID"/fd/*; do
	case "$(readlink "$fd" 2>/dev/null)" in
	/memfd:*) FILE_KB=$((FILE_KB + $(stat -L -c '%b * %B / 1024' "$fd"))) ;;
	esac
done
RSS_KB=$((RSS_KB + FILE_KB))
FILE_MB=$(awk -v k="$FILE_KB" 'BEGIN {printf "%.1f", k / 1024}')
CACHE_BYTES=$(curl -fsS "$small_METRICS" | awk '/^tileproxy_cache_bytes / {printf "%d", $2}')
RSS_MB=$(awk -v k="$RSS_KB" 'BEGIN {printf "%.1f", k / 1024}')
RSS_LIMIT=$(awk 'BEGIN {printf "%.1f", 1.3 * 64 + 50}')

mkdir -p bench/results
{
	echo "# tileproxy benchmark, $(date -u +%Y-%m-%dT%H:%MZ)"
	echo
	if [ "$PIN" = 1 ]; then
		pinned="each server on CPU 0 and wrk -t1 on CPU 1"
	else
		pinned="servers and wrk -t2 unpinned"
	fi
	echo "$(nproc) cores, $(go version | awk '{print $3}'), $(nginx -v 2>&1 | sed 's/.*: //'), wrk -c$CONNS -d$DURATION over loopback ($pinned); each row run $ROUNDS times, the table shows its best round by req/s;"
	echo "$(cat "$TMP/tiles.txt") (random paths from the same list for every server; nginx and bare get the hs256 row's token header too, and ignore it)."
	echo
	echo "| server | req/s | p50 ms | p99 ms | non-2xx | server CPU µs/req | server CPU busy | worst/best round |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|"
	awk '{printf "| %s | %s | %s | %s | %s | %s | %s%% | %.2f |\n", $1, $2, $3, $4, $5, $6, $7, $8}' "$TMP/rows"
	echo
	echo "Server CPU busy is the server's CPU time over the run's wall time: near 100% (of its one core, when pinned) the server is what limits req/s; well under it, wrk is."
	echo
	awk -v coldpm="$COLD_PM" -v mp50="$MP50" -v mp99="$MP99" -v dp50="$DP50" -v dp99="$DP99" -v herd="$HERD" -v rss="$RSS_MB" -v lim="$RSS_LIMIT" -v cb="$CACHE_BYTES" -v file="$FILE_MB" -v rounds="$ROUNDS" -F '\t' '
		BEGIN {
			printf "Misses (cache off, 400 sequential GETs): tileproxy p50 %s ms, p99 %s ms; direct SDK p50 %s ms, p99 %s ms; overhead p50 %.2f ms, p99 %.2f ms.\n\n", mp50, mp99, dp50, dp99, mp50 - dp50, mp99 - dp99
			printf "Herd: 200 concurrent first requests for one tile -> %d S3 GET(s).\n\n", herd
			printf "PMTiles: a cold archive tile with warm directories cost %s ranged GET(s) (mean over 200 tiles).\n\n", coldpm
			printf "Memory: RSS plus the cache'"'"'s memory file %s MiB (the file %s MiB) after 330 MiB of distinct objects through a 64 MiB cache (cache holds %.1f MiB); limit 1.3 x 64 + 50 = %s MiB.\n\n", rss, file, cb / 1048576, lim
			printf "Each ratio divides one row'"'"'s run by the other'"'"'s in the same round; the mean is geometric, over %d rounds.\n\n| ratio | mean | lowest round | highest round |\n|---|---:|---:|---:|\n", rounds
		}
		{ printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4; line = line sep $1 " " $2; sep = ", " }
		END { printf "\n**Ratios:** %s; miss overhead p50 %.2f ms; herd %d GET; cold archive tile %s GET; RSS %s/%s MiB\n", line, mp50 - dp50, herd, coldpm, rss, lim }' "$TMP/ratios"
} >bench/results/latest.md
cat bench/results/latest.md
