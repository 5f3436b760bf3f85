#!/bin/sh
# One-shot (docker-compose service minio-init, image minio/mc): create the anomaly bucket once
# MinIO answers. Idempotent: an existing bucket is left as it is. The bucket stays private.
set -eu
: "${S3_ENDPOINT:?}" "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}" "${S3_BUCKET:?}"
i=0
until mc alias set sentinel "$S3_ENDPOINT" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null 2>&1; do
  i=$((i + 1))
  if [ "$i" -ge 30 ]; then
    echo "minio-init: MinIO at $S3_ENDPOINT did not answer within 60 s" >&2
    exit 1
  fi
  sleep 2
done
mc mb --ignore-existing "sentinel/$S3_BUCKET"
mc anonymous set none "sentinel/$S3_BUCKET" >/dev/null
echo "minio-init: bucket s3://$S3_BUCKET ready at $S3_ENDPOINT"
