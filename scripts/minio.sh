#!/usr/bin/env bash
# A throwaway MinIO on 127.0.0.1 for tests and benchmarks.
#
#   scripts/minio.sh install   build the pinned minio and mc if missing (~4 min once)
#   scripts/minio.sh start     start on a free loopback port with a temp data dir,
#                              wait until ready, create the read-only user, and
#                              write the environment for tests to $STATE/env
#   scripts/minio.sh env       print that environment (source it)
#   scripts/minio.sh stop      stop it and delete its data
#
# The binaries are pinned by module version and checked with `go version -m`,
# so an unrelated minio on PATH is never used by mistake.
set -euo pipefail

MINIO_MOD=github.com/minio/minio
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
MC_MOD=github.com/minio/mc
MC_VERSION=v0.0.0-20250313080218-cf909e1063a9

STATE=${TILEPROXY_MINIO_STATE:-${TMPDIR:-/tmp}/tileproxy-minio}
GOBIN_DIR=$(go env GOBIN)
[ -n "$GOBIN_DIR" ] || GOBIN_DIR="$(go env GOPATH)/bin"

log() { echo "minio.sh: $*" >&2; }

# pinned BIN MOD VERSION: true if BIN is that module at that version.
pinned() {
	[ -x "$1" ] && go version -m "$1" 2>/dev/null | grep -Eq "^[[:space:]]+mod[[:space:]]+$2[[:space:]]+$3([[:space:]]|\$)"
}

install_one() { # name mod version
	local bin="$GOBIN_DIR/$1"
	if pinned "$bin" "$2" "$3"; then return 0; fi
	log "installing $2@$3 (first time only; takes a few minutes)"
	GOFLAGS=-mod=mod GOBIN="$GOBIN_DIR" go install "$2@$3"
	pinned "$bin" "$2" "$3" || { log "installed $bin is not $2@$3"; exit 1; }
}

cmd_install() {
	install_one minio "$MINIO_MOD" "$MINIO_VERSION"
	install_one mc "$MC_MOD" "$MC_VERSION"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
	local p
	for p in $(seq "${1:-19000}" 19999); do
		if port_free "$p"; then echo "$p"; return 0; fi
	done
	log "no free port"; exit 1
}

cmd_start() {
	cmd_install
	if [ -f "$STATE/pid" ] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null; then
		log "already running (pid $(cat "$STATE/pid"))"; return 0
	fi
	rm -rf "$STATE"; mkdir -p "$STATE/data" "$STATE/mc"
	local port console user pass
	port=$(free_port 19000)
	console=$(free_port $((port + 1)))
	user="tpadmin$RANDOM"
	pass="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
	MINIO_ROOT_USER=$user MINIO_ROOT_PASSWORD=$pass MINIO_BROWSER=off \
		MINIO_UPDATE=off MINIO_CALLHOME_ENABLE=off \
		setsid "$GOBIN_DIR/minio" server --quiet --address "127.0.0.1:$port" \
		--console-address "127.0.0.1:$console" "$STATE/data" >"$STATE/log" 2>&1 &
	echo $! >"$STATE/pid"
	local endpoint="http://127.0.0.1:$port"
	for _ in $(seq 1 120); do
		if curl -fsS "$endpoint/minio/health/ready" >/dev/null 2>&1; then break; fi
		if ! kill -0 "$(cat "$STATE/pid")" 2>/dev/null; then log "minio exited:"; cat "$STATE/log" >&2; exit 1; fi
		sleep 0.25
	done
	curl -fsS "$endpoint/minio/health/ready" >/dev/null || { log "minio not ready after 30s"; cat "$STATE/log" >&2; exit 1; }

	# The read-only identity the proxy runs as, the same steps the
	# docker-compose init performs (compose/init.sh).
	local reader_key="tpreader$RANDOM" reader_secret
	reader_secret="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
	MC_CONFIG_DIR="$STATE/mc" MINIO_ENDPOINT="$endpoint" MINIO_ROOT_USER="$user" MINIO_ROOT_PASSWORD="$pass" \
		READER_ACCESS_KEY="$reader_key" READER_SECRET_KEY="$reader_secret" BUCKET="" MC="$GOBIN_DIR/mc" \
		"$(dirname "$0")/../deploy/compose/init.sh" >"$STATE/init.log" 2>&1 || { log "init failed:"; cat "$STATE/init.log" >&2; exit 1; }

	cat >"$STATE/env" <<EOF
export TILEPROXY_TEST_S3_ENDPOINT=$endpoint
export TILEPROXY_TEST_S3_ACCESS_KEY=$user
export TILEPROXY_TEST_S3_SECRET_KEY=$pass
export TILEPROXY_TEST_S3_READER_ACCESS_KEY=$reader_key
export TILEPROXY_TEST_S3_READER_SECRET_KEY=$reader_secret
export TILEPROXY_TEST_MINIO_BIN=$GOBIN_DIR/minio
export TILEPROXY_TEST_MC_BIN=$GOBIN_DIR/mc
EOF
	log "ready at $endpoint (pid $(cat "$STATE/pid"))"
}

cmd_stop() {
	if [ -f "$STATE/pid" ]; then
		local pid; pid=$(cat "$STATE/pid")
		kill "$pid" 2>/dev/null || true
		for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
		kill -9 "$pid" 2>/dev/null || true
	fi
	rm -rf "$STATE"
}

case "${1:-}" in
install) cmd_install ;;
start) cmd_start ;;
env) cat "$STATE/env" ;;
stop) cmd_stop ;;
*) echo "usage: $0 install|start|env|stop" >&2; exit 2 ;;
esac
