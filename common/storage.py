"""Where a job's durable files live: a folder on local disk, or an S3 bucket (`STORAGE_URL`).

Both behind one small API of keys (`"jobs/<id>/result/result.wav"`, '/'-separated):

    put_bytes / put_file   atomic: a reader sees the old object or the new one, never half
    get_bytes, read_range, size (None: no such object), exists, list_prefix, delete (one
    object), delete_prefix,
    copy (server-side on S3), get_file (download to a local path), open (a seekable read-only
    file over an object: S3 range GETs, buffered, so libsndfile can read a WAV in place)
    local_path(key)        the object's own file on local disk; None on S3

On S3 every call is retried on connection errors and server errors with backoff for up to
`retry_s` seconds (the server restarting), then fails with a `StorageError` naming the
endpoint. `storage_for(settings)` builds the one the settings describe.
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import BinaryIO

from common.errors import StorageError

READ_BUFFER = 1 << 20  # bytes an S3 file object fetches per range GET (at least)


class LocalStorage:
    """Keys are paths under `root` (the data dir: the layout `./run.sh up` always had)."""

    remote = False

    def __init__(self, root: Path):
        self.root = Path(root)

    def describe(self) -> str:
        return str(self.root)

    def local_path(self, key: str) -> Path:
        return self.root / key

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self.local_path(key)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"cannot write {key} under {self.root}: {e}") from e

    def put_file(self, key: str, source: Path) -> None:
        path = self.local_path(key)
        if Path(source).resolve() == path.resolve():
            return  # the working file is the object already
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, tmp)
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"cannot write {key} under {self.root}: {e}") from e

    def get_bytes(self, key: str) -> bytes:
        return self.local_path(key).read_bytes()

    def read_range(self, key: str, start: int, length: int) -> bytes:
        with open(self.local_path(key), "rb") as f:
            f.seek(start)
            return f.read(length)

    def size(self, key: str) -> int | None:
        try:
            return self.local_path(key).stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            return None

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def list_prefix(self, prefix: str) -> list[str]:
        base = self.local_path(prefix)
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.endswith(".tmp")
        )

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self.local_path(prefix), ignore_errors=True)

    def delete(self, key: str) -> None:
        self.local_path(key).unlink(missing_ok=True)

    def copy(self, source: str, target: str) -> None:
        src, dst = self.local_path(source), self.local_path(target)
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except FileExistsError:
            dst.unlink()
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    def get_file(self, key: str, target: Path) -> None:
        if self.local_path(key).resolve() != Path(target).resolve():
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.local_path(key), target)

    def open(self, key: str) -> BinaryIO:
        return open(self.local_path(key), "rb")


class S3Storage:
    """Keys under `s3://bucket/prefix`; boto3 reads AWS_ACCESS_KEY_ID etc. itself."""

    remote = True

    def __init__(self, url: str, endpoint_url: str = "", retry_s: float = 60.0):
        import boto3
        from botocore.config import Config

        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not url.startswith("s3://") or not bucket:
            raise ValueError(f"STORAGE_URL {url!r} is not s3://bucket[/prefix]")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.endpoint_url = endpoint_url or None
        self.retry_s = retry_s
        self.client = boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            # one attempt per call: the retrying (bounded by retry_s) is ours
            config=Config(
                retries={"max_attempts": 1},
                connect_timeout=5,
                read_timeout=60,
                max_pool_connections=32,
            ),
        )

    def describe(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"

    def local_path(self, key: str) -> None:
        return None

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, fn, *args, **kwargs):
        """fn(...) retried on connection and server errors for up to retry_s seconds."""
        from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
        from botocore.exceptions import ConnectionError as BotoConnectionError

        deadline = time.monotonic() + self.retry_s
        delay = 0.2
        while True:
            try:
                return fn(*args, **kwargs)
            except ClientError as e:
                status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                code = e.response.get("Error", {}).get("Code", "")
                if status == 404 or code in ("NoSuchKey", "404", "NotFound"):
                    raise FileNotFoundError(what) from e
                if status < 500 or time.monotonic() > deadline:
                    raise StorageError(f"object storage {self.describe()}: {what}: {e}") from e
                error = e
            except (BotoConnectionError, HTTPClientError) as e:  # refused, reset, timed out
                if time.monotonic() > deadline:
                    raise StorageError(
                        f"object storage {self.describe()} unreachable for {self.retry_s:.0f} s"
                        f" ({what}): {e}"
                    ) from e
                error = e
            except BotoCoreError as e:  # no credentials, a bad endpoint URL: no use retrying
                raise StorageError(f"object storage {self.describe()}: {what}: {e}") from e
            del error
            time.sleep(delay)
            delay = min(2.0, delay * 2)

    def put_bytes(self, key: str, data: bytes) -> None:
        self._call(
            f"put {key}", self.client.put_object, Bucket=self.bucket, Key=self._key(key), Body=data
        )

    def put_file(self, key: str, source: Path) -> None:
        # upload_file sends big files in parts; the object appears whole when it completes
        self._call(f"put {key}", self.client.upload_file, str(source), self.bucket, self._key(key))

    def get_bytes(self, key: str) -> bytes:
        def get():
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

        return self._call(f"get {key}", get)

    def read_range(self, key: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""

        def get():
            r = self.client.get_object(
                Bucket=self.bucket, Key=self._key(key), Range=f"bytes={start}-{start + length - 1}"
            )
            return r["Body"].read()

        from botocore.exceptions import ClientError

        try:
            return self._call(f"get {key} bytes {start}+{length}", get)
        except StorageError as e:
            cause = e.__cause__
            if isinstance(cause, ClientError) and cause.response["Error"]["Code"] == (
                "InvalidRange"
            ):
                return b""  # past the end: as a file read there
            raise

    def size(self, key: str) -> int | None:
        try:
            head = self._call(
                f"head {key}", self.client.head_object, Bucket=self.bucket, Key=self._key(key)
            )
        except FileNotFoundError:
            return None
        return int(head["ContentLength"])

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def list_prefix(self, prefix: str) -> list[str]:
        full = self._key(prefix.rstrip("/") + "/")
        keys: list[str] = []
        token = None
        while True:
            kwargs = {"Bucket": self.bucket, "Prefix": full}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call(f"list {prefix}", self.client.list_objects_v2, **kwargs)
            skip = len(self.prefix) + 1 if self.prefix else 0
            keys += [o["Key"][skip:] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return sorted(keys)
            token = page["NextContinuationToken"]

    def delete_prefix(self, prefix: str) -> None:
        keys = self.list_prefix(prefix)
        for i in range(0, len(keys), 1000):
            batch = [{"Key": self._key(k)} for k in keys[i : i + 1000]]
            self._call(
                f"delete {prefix}",
                self.client.delete_objects,
                Bucket=self.bucket,
                Delete={"Objects": batch, "Quiet": True},
            )

    def delete(self, key: str) -> None:
        self._call(
            f"delete {key}", self.client.delete_object, Bucket=self.bucket, Key=self._key(key)
        )

    def copy(self, source: str, target: str) -> None:
        """Server-side: the bytes never pass through this process."""
        self._call(
            f"copy {source}",
            self.client.copy,
            {"Bucket": self.bucket, "Key": self._key(source)},
            self.bucket,
            self._key(target),
        )

    def get_file(self, key: str, target: Path) -> None:
        """Download to `target` (a temporary name, then renamed)."""
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            self._call(
                f"get {key}", self.client.download_file, self.bucket, self._key(key), str(tmp)
            )
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def open(self, key: str) -> BinaryIO:
        size = self.size(key)
        if size is None:
            raise FileNotFoundError(key)
        return io.BufferedReader(S3RangeReader(self, key, size), buffer_size=READ_BUFFER)


class SeekableReader(io.RawIOBase):
    """A read-only raw file of `length` bytes that can seek anywhere; `readinto` is the
    subclass's (wrap it in `io.BufferedReader` to read it in large pieces)."""

    def __init__(self, length: int):
        self.length, self.pos = length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.length}[whence]
        self.pos = max(0, base + offset)
        return self.pos


class S3RangeReader(SeekableReader):
    """A seekable read-only raw file over one object: each read is a range GET."""

    def __init__(self, storage: S3Storage, key: str, size: int):
        super().__init__(size)
        self.storage, self.key = storage, key

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.length - self.pos)
        if n <= 0:
            return 0
        data = self.storage.read_range(self.key, self.pos, n)  # the buffer above sizes n
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)


Storage = LocalStorage | S3Storage


def storage_for(settings) -> Storage:
    """The storage `settings.storage_url` names: empty = the data dir on local disk."""
    return _storage(
        settings.storage_url,
        settings.s3_endpoint_url,
        settings.storage_retry_s,
        str(settings.data_dir),
    )


@functools.lru_cache(maxsize=8)
def _storage(url: str, endpoint: str, retry_s: float, data_dir: str) -> Storage:
    # one per setting: an S3 client (its connection pool) is made once, not per request
    if not url:
        return LocalStorage(Path(data_dir))
    return S3Storage(url, endpoint, retry_s)
