"""Object storage behind one small interface: a local directory or any S3-compatible endpoint."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import BinaryIO, Protocol

from store.settings import Settings


class StorageError(RuntimeError):
    pass


class Upload(Protocol):
    """An object written in parts (S3 multipart, or a local .part file); nothing is visible at
    its key until `complete`; `abort` drops what was written."""

    def write_part(self, data: bytes) -> None: ...
    def complete(self) -> None: ...
    def abort(self) -> None: ...


class Storage(Protocol):
    def put_file(self, key: str, path: Path) -> int: ...
    def put_bytes(self, key: str, data: bytes) -> None: ...
    def get_bytes(self, key: str) -> bytes | None: ...
    def download(self, key: str, path: Path) -> None: ...
    def open(self, key: str) -> BinaryIO: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def list(self, prefix: str) -> list[str]: ...
    def url(self, key: str, expires_s: int = 3600) -> str | None: ...
    def check(self) -> None: ...
    def upload(self, key: str) -> Upload: ...
    def size(self, key: str) -> int | None: ...


def _clean_key(key: str) -> str:
    key = key.lstrip("/")
    if not key or ".." in key.split("/"):
        raise StorageError(f"invalid storage key {key!r}")
    return key


class _LocalUpload:
    def __init__(self, dest: Path):
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.dest, self.tmp = dest, dest.with_name(dest.name + ".part")
        self.file = self.tmp.open("wb")

    def write_part(self, data: bytes) -> None:
        self.file.write(data)

    def complete(self) -> None:
        self.file.close()
        self.tmp.replace(self.dest)

    def abort(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


class _S3Upload:
    """An S3 multipart upload: each part (>= 5 MiB but the last) is sent as it comes."""

    def __init__(self, client, bucket: str, key: str):  # noqa: ANN001
        self.client, self.bucket, self.key = client, bucket, key
        self.upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        self.parts: list[dict] = []

    def write_part(self, data: bytes) -> None:
        number = len(self.parts) + 1
        r = self.client.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=data
        )
        self.parts.append({"ETag": r["ETag"], "PartNumber": number})

    def complete(self) -> None:
        if not self.parts:  # S3 refuses a multipart upload of no parts: an empty object
            self.write_part(b"")
        self.client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": self.parts},
        )

    def abort(self) -> None:
        self.client.abort_multipart_upload(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id
        )


class LocalStorage:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / _clean_key(key)

    def put_file(self, key: str, path: Path) -> int:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        shutil.copyfile(path, tmp)
        tmp.replace(dest)  # readers never see half a checkpoint
        return dest.stat().st_size

    def put_bytes(self, key: str, data: bytes) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(dest)

    def get_bytes(self, key: str) -> bytes | None:
        path = self._path(key)
        return path.read_bytes() if path.is_file() else None

    def download(self, key: str, path: Path) -> None:
        src = self._path(key)
        if not src.is_file():
            raise StorageError(f"no object at {key!r} in {self.root}")
        shutil.copyfile(src, path)

    def open(self, key: str) -> BinaryIO:
        src = self._path(key)
        if not src.is_file():
            raise StorageError(f"no object at {key!r} in {self.root}")
        return src.open("rb")

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str) -> list[str]:
        base = self.root
        folder = base / prefix.rsplit("/", 1)[0] if "/" in prefix else base  # walk only under it
        if not folder.is_dir():
            return []
        return sorted(
            str(p.relative_to(base))
            for p in folder.rglob("*")
            if p.is_file()
            and not p.name.endswith(".part")
            and str(p.relative_to(base)).startswith(prefix)
        )

    def url(self, key: str, expires_s: int = 3600) -> str | None:
        return None  # served as a stream by the API

    def check(self) -> None:
        if not self.root.is_dir():
            raise StorageError(f"storage directory {self.root} is missing")

    def upload(self, key: str) -> Upload:
        return _LocalUpload(self._path(key))

    def size(self, key: str) -> int | None:
        try:
            path = self._path(key)
            return path.stat().st_size if path.is_file() else None
        except (OSError, ValueError, StorageError):  # a name too long for the filesystem, ...
            return None


class S3Storage:
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        public_endpoint_url: str | None = None,
    ):
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            config=Config(retries={"max_attempts": 3, "mode": "standard"}),
        )
        # URLs handed to users are signed for the address they reach (the signature covers the
        # host, so rewriting a URL signed for the services' address would not do). Signing makes
        # no request: this client only ever signs.
        self.signer = self.client
        if public_endpoint_url and public_endpoint_url != endpoint_url:
            self.signer = boto3.client("s3", endpoint_url=public_endpoint_url, region_name=region)

    def _key(self, key: str) -> str:
        return self.prefix + _clean_key(key)

    def put_file(self, key: str, path: Path) -> int:
        self.client.upload_file(str(path), self.bucket, self._key(key))
        return Path(path).stat().st_size

    def put_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get_bytes(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        return obj["Body"].read()

    def download(self, key: str, path: Path) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.download_file(self.bucket, self._key(key), str(path))
        except (ClientError, BotoCoreError) as e:  # BotoCoreError: the endpoint is unreachable
            raise StorageError(f"cannot download s3://{self.bucket}/{self._key(key)}: {e}") from e

    def open(self, key: str) -> BinaryIO:
        obj = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        return obj["Body"]

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError:
            return False
        return True

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def list(self, prefix: str) -> list[str]:
        keys = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            keys += [o["Key"][len(self.prefix) :] for o in page.get("Contents", [])]
        return sorted(keys)

    def url(self, key: str, expires_s: int = 3600) -> str | None:
        """A presigned GET for users: signed for SAGAN_S3_PUBLIC_ENDPOINT_URL when set."""
        return self.signer.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=expires_s
        )

    def check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as e:  # botocore raises several unrelated types here
            raise StorageError(f"bucket {self.bucket!r} not reachable: {e}") from e

    def upload(self, key: str) -> Upload:
        return _S3Upload(self.client, self.bucket, self._key(key))

    def size(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            return int(
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"]
            )
        except ClientError:
            return None


def storage_from_settings(settings: Settings) -> Storage:
    if settings.storage == "s3":
        return S3Storage(
            settings.s3_bucket,
            settings.s3_prefix,
            settings.s3_endpoint_url,
            settings.s3_region,
            public_endpoint_url=settings.s3_public_endpoint_url,
        )
    return LocalStorage(settings.resolved_storage_dir())
