#!/bin/sh
# Prepares a MinIO for tileproxy: the bucket, the tiles, and the read-only
# identity tileproxy runs as (its base credentials for STS AssumeRole).
# Used by docker-compose's init service and, with BUCKET empty, by
# scripts/minio.sh for the tests, so both run exactly these steps.
#
# Env: MINIO_ENDPOINT MINIO_ROOT_USER MINIO_ROOT_PASSWORD
#      READER_ACCESS_KEY READER_SECRET_KEY
#      BUCKET (optional: create it)  TILES_DIR (optional: upload into BUCKET)
#      READ_RESOURCE (default arn:aws:s3:::BUCKET/*, or arn:aws:s3:::* without BUCKET)
#      POLICY_NAME (default tileproxy-read)
#      MC (mc binary, default mc)
set -eu
MC=${MC:-mc}
: "${MINIO_ENDPOINT:?}" "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}" "${READER_ACCESS_KEY:?}" "${READER_SECRET_KEY:?}"
BUCKET=${BUCKET:-}
TILES_DIR=${TILES_DIR:-}
POLICY_NAME=${POLICY_NAME:-tileproxy-read}
if [ -n "$BUCKET" ]; then
	READ_RESOURCE=${READ_RESOURCE:-arn:aws:s3:::$BUCKET/*}
else
	READ_RESOURCE=${READ_RESOURCE:-arn:aws:s3:::*}
fi

# mc reads the alias from its config dir; keep it private to this run.
export MC_CONFIG_DIR="${MC_CONFIG_DIR:-$(mktemp -d)}"
$MC alias set tp "$MINIO_ENDPOINT" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null

if [ -n "$BUCKET" ]; then
	$MC mb --ignore-existing "tp/$BUCKET"
	if [ -n "$TILES_DIR" ]; then
		$MC cp --recursive "$TILES_DIR/" "tp/$BUCKET/"
	fi
fi

# The reader may only GetObject; each tileset's STS session policy then
# narrows that to the tileset's prefix.
policy=$(mktemp)
cat >"$policy" <<JSON
{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": ["$READ_RESOURCE"]}
  ]
}
JSON
$MC admin policy create tp "$POLICY_NAME" "$policy"
rm -f "$policy"
$MC admin user add tp "$READER_ACCESS_KEY" "$READER_SECRET_KEY"
$MC admin policy attach tp "$POLICY_NAME" --user "$READER_ACCESS_KEY" || true
echo "init: reader $READER_ACCESS_KEY can GetObject on $READ_RESOURCE"
