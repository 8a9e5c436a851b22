#!/bin/sh
# Create the bucket the service writes to (idempotent); runs once in the minio/mc image at start.
set -eu
until mc alias set sagan "${S3_ENDPOINT:-http://minio:9000}" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null 2>&1; do
  echo "waiting for MinIO..."
  sleep 1
done
mc mb --ignore-existing "sagan/${SAGAN_S3_BUCKET:-sagan}"
echo "bucket ${SAGAN_S3_BUCKET:-sagan} ready"
