"""Read and write by location: an S3 bucket, a local folder, an http(s) URL, a local path.

Files are moved as streams through local temporary files, never whole payloads
in memory. Writes are atomic: an S3 put is one object version (a multipart
upload becomes visible only when complete, and an interrupted one is aborted), a
local write is a temporary file in the target folder renamed over the target.

The one atomic writer of the project is :func:`atomic_file` / :func:`open_atomic`: the temporary
file ``.<name>.<random>.tmp`` is created with ``os.open(..., 0o666)``, so the kernel applies the
process umask (the umask is never read or changed: setting it is process-wide and races between
threads). While a writer lives it holds an ``flock`` on its temporary file, so
:func:`remove_stale_temp_files` can remove the leftovers of killed runs at the next start without
touching a live writer's file.
"""

from __future__ import annotations

import fcntl
import glob
import logging
import mimetypes
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import unquote, urlparse

import requests

from bond_reporting import retry
from bond_reporting.errors import ConfigError, SourceError
from bond_reporting.logs import one_line, plural
from bond_reporting.settings import Settings

log = logging.getLogger(__name__)

HTTP_TIMEOUT = (10, 120)  # seconds: connect, read (between bytes)
HTTP_RETRIES = 4  # attempts on transient failures (connection errors, time-outs, 429, 5xx)
HTTP_BACKOFF = 1.0  # seconds, doubled after each failed attempt
# seconds for one download, retries included: a server that trickles bytes never hits the read
# time-out, so each attempt also stops here, and no new attempt starts after it.
HTTP_DEADLINE = 600.0
CHUNK = 1 << 20
# S3 uploads (s3transfer): objects larger than this go up in parts; MAX_BANDWIDTH (bytes/s) None: no limit.
MULTIPART_THRESHOLD = 8 << 20
MAX_BANDWIDTH: int | None = None
# No complete answer: worth another try (a body cut off mid-way is a ChunkedEncodingError).
TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


class Bucket(Protocol):
    """Where report CSVs live: ``download``/``upload`` whole objects by key."""

    description: str

    def download(self, key: str, dest: Path) -> None: ...

    def upload(self, src: Path, key: str) -> None: ...


@dataclass
class LocalBucket:
    """A local folder standing in for the bucket (local runs, demo, tests)."""

    root: Path

    @property
    def description(self) -> str:
        return f"folder {self.root}"

    def download(self, key: str, dest: Path) -> None:
        src = self.root / key
        if not src.is_file():
            raise SourceError(f"{self.description}: no file {key!r}")
        shutil.copyfile(src, dest)

    def upload(self, src: Path, key: str) -> None:
        write_file_atomically(src, self.root / key)


@dataclass
class S3Bucket:
    """An S3 bucket (AWS, or any S3-protocol endpoint via AWS_ENDPOINT_URL); keys under ``prefix``."""

    name: str
    settings: Settings
    prefix: str = ""

    @property
    def description(self) -> str:
        return f"s3://{self.name}" + (f"/{self.prefix}" if self.prefix else "")

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _client(self):
        import boto3
        from botocore.config import Config

        kwargs = {}
        if self.settings.aws_access_id:
            kwargs = {
                "aws_access_key_id": self.settings.aws_access_id,
                "aws_secret_access_key": self.settings.aws_pass,
            }
        config = Config(connect_timeout=10, read_timeout=120, retries={"max_attempts": 5, "mode": "standard"})
        return boto3.client("s3", endpoint_url=self.settings.aws_endpoint_url, config=config, **kwargs)

    def check(self) -> None:
        """Fail early, in one line, when the bucket does not exist (ConfigError: BUCKET names nothing).

        Other answers (e.g. 403 for a role that may put objects but not list the bucket) are left to
        the upload itself.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client().head_bucket(Bucket=self.name)
        except ClientError as exc:
            if _s3_code(exc) in ("404", "NoSuchBucket"):
                raise ConfigError(f"BUCKET: there is no bucket {self.name!r}{self._where()}") from None
            log.debug("head_bucket %s: %s", self.name, exc)
        except BotoCoreError as exc:
            raise SourceError(f"{self.description}: {one_line(exc)}") from None

    def download(self, key: str, dest: Path) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client().download_file(self.name, self._key(key), str(dest))
        except ClientError as exc:
            code = _s3_code(exc)
            if code == "NoSuchBucket":
                raise ConfigError(f"BUCKET: there is no bucket {self.name!r}{self._where()}") from None
            if code in ("404", "NoSuchKey"):
                raise SourceError(f"{self.description}: no object {key!r} ({code})") from None
            raise SourceError(f"{self.description}/{key}: S3 error {code}: {one_line(exc)}") from None
        except BotoCoreError as exc:
            raise SourceError(f"{self.description}/{key}: {one_line(exc)}") from None

    def upload(self, src: Path, key: str) -> None:
        """One object version; an interrupted multipart upload is aborted by s3transfer (Ctrl-C, SIGTERM)."""
        from boto3.exceptions import S3UploadFailedError
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import BotoCoreError, ClientError

        config = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD,
            multipart_chunksize=MULTIPART_THRESHOLD,
            max_bandwidth=MAX_BANDWIDTH,
        )
        try:
            content_type = mimetypes.guess_type(key)[0] or "text/csv"  # report CSVs; run reports are text/html
            self._client().upload_file(
                str(src), self.name, self._key(key), ExtraArgs={"ContentType": content_type}, Config=config
            )
        except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
            cause = exc if isinstance(exc, ClientError) else exc.__context__
            code = _s3_code(cause) if isinstance(cause, ClientError) else ""
            if code == "NoSuchBucket":
                raise ConfigError(f"BUCKET: there is no bucket {self.name!r}{self._where()}") from None
            reason = one_line(cause if isinstance(cause, ClientError | BotoCoreError) else exc)
            raise SourceError(f"upload to {self.description}/{key} failed: {reason}") from None

    def _where(self) -> str:
        return f" at {self.settings.aws_endpoint_url}" if self.settings.aws_endpoint_url else ""


def _s3_code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


# S3 bucket names (AWS rules): 3-63 lowercase letters, digits, dots and hyphens, letter/digit at both ends.
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def open_bucket(location: str, settings: Settings) -> Bucket:
    """``BUCKET`` value → bucket, validated (ConfigError, exit 2, one line, never echoing credentials).

    * ``file:///abs/path`` (RFC 8089; also ``file:/abs/path`` and ``file://localhost/abs/path``):
      a local folder. ``file://dir/sub`` (a host part) and a relative or empty path are refused.
    * ``s3://bucket`` or ``s3://bucket/prefix``: an S3 bucket, keys under the prefix.
    * a path (has ``/`` or starts with ``.``): a local folder; anything else: an S3 bucket name.
    """
    location = location.strip()
    scheme = location.partition(":")[0].lower() if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", location) else ""
    if scheme == "file":
        parsed = urlparse(location)
        if "@" in parsed.netloc:
            raise ConfigError("BUCKET must not contain credentials (user:password@); they are not used here")
        if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/") or parsed.query:
            raise ConfigError(
                "BUCKET: a file URL must be file:///absolute/path (RFC 8089): "
                + (
                    f"{parsed.netloc!r} would be a host name"
                    if parsed.netloc not in ("", "localhost")
                    else "the path is empty or relative"
                )
                + "; for a relative folder give the path itself (e.g. BUCKET=./reports)"
            )
        return LocalBucket(Path(unquote(parsed.path)))
    if scheme == "s3":
        parsed = urlparse(location)
        if "@" in parsed.netloc:
            raise ConfigError("BUCKET must not contain credentials (user:password@); use AWS_ACCESS_ID and AWS_PASS")
        name, prefix = parsed.netloc, parsed.path.strip("/")
        if not name:
            raise ConfigError(
                "BUCKET: no bucket name after s3:// (a '/' missing?); use s3://bucket or s3://bucket/prefix"
            )
        if not _BUCKET_NAME.fullmatch(name) or parsed.query or parsed.fragment or "//" in parsed.path:
            shown = f"{name!r} is not an S3 bucket name" if re.fullmatch(r"[\w.-]+", name) else "no valid bucket name"
            raise ConfigError(
                f"BUCKET: {shown} in the s3:// URL; use s3://bucket or s3://bucket/prefix "
                "(a bucket name has 3-63 lowercase letters, digits, dots and hyphens)"
            )
        return S3Bucket(name, settings, prefix)
    if scheme:
        raise ConfigError(
            f"BUCKET: unsupported scheme {scheme + ':'!r}; use s3://bucket[/prefix], file:///path or a name"
        )
    if "/" in location or location.startswith("."):
        return LocalBucket(Path(location))
    if not _BUCKET_NAME.fullmatch(location):
        raise ConfigError(
            f"BUCKET {location!r} is not an S3 bucket name (3-63 lowercase letters, digits, dots and hyphens), "
            "s3://bucket[/prefix], file:///path or a folder path"
        )
    return S3Bucket(location, settings)


def write_file_atomically(src: Path, target: Path) -> None:
    """Copy ``src`` to ``target`` through :func:`atomic_file` (readers see the old or the new file)."""
    with atomic_file(target) as tmp:
        shutil.copyfile(src, tmp)


@contextmanager
def temp_file(folder: Path, name: str) -> Iterator[Path]:
    """A new empty file ``folder/.<name>.<random>.tmp``, removed on exit unless it was renamed away.

    Created with mode 0o666 through ``os.open``, so the kernel applies the process umask (the usual
    permissions, never 0600, and no umask change). The file is ``flock``-ed for its whole life: that
    is how :func:`remove_stale_temp_files` tells a live writer's file from a killed run's leftover.
    """
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        path = folder / f".{name}.{secrets.token_hex(4)}.tmp"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            # A cleaner may have removed the file between its creation and the lock: make another.
            if path.stat().st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield path
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)


@contextmanager
def atomic_file(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` (see :func:`temp_file`); on a normal exit its content
    is flushed to disk and it is renamed over ``target``. On any exception (Ctrl-C and SIGTERM
    included) it is removed and ``target`` is left as it was."""
    with temp_file(target.parent, target.name) as tmp:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)


@contextmanager
def open_atomic(target: Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """:func:`atomic_file` as an open file: ``with open_atomic(path, "w", encoding="utf-8") as out``."""
    with atomic_file(target) as tmp, open(tmp, mode, **kwargs) as out:
        yield out


def remove_stale_temp_files(folder: Path, *names: str) -> list[Path]:
    """Remove ``folder/.<name>.*.tmp`` left by killed runs; return what was removed.

    Only files no live writer holds (:func:`temp_file` keeps an ``flock`` on its file), only with
    those names, only in ``folder``: call it for the places a step owns, when it starts.
    """
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for name in names:
        for path in folder.glob(glob.escape(f".{name}.") + "*.tmp"):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live writer's file
            else:
                path.unlink(missing_ok=True)
                removed.append(path)
            finally:
                os.close(fd)
    for path in removed:
        log.info("removed %s, left by an earlier run that was stopped", path)
    return removed


def download_url(url: str, dest: Path, *, timeout: tuple[float, float] | None = None) -> None:
    """Stream an http(s) URL to ``dest``; retry transient failures with backoff (:mod:`bond_reporting.retry`).

    ``timeout``: (connect, read) seconds, the read time-out being between two bytes; the whole
    download, retries included, is bounded by ``HTTP_DEADLINE`` seconds. Raises SourceError with
    one line: ``GET <url without credentials>: <reason in words> after N attempts``.
    """
    timeout = timeout or HTTP_TIMEOUT
    deadline = time.monotonic() + HTTP_DEADLINE
    what = f"GET {_safe_url(url)}"

    def get() -> None:
        with requests.get(url, stream=True, timeout=timeout) as response:
            if response.status_code == 429 or response.status_code >= 500:
                raise retry.Transient(_status_line(response), retry_after=retry.retry_after(response.headers))
            if response.status_code >= 400:
                raise SourceError(f"{what}: {_status_line(response)}", retryable=False)
            with open(dest, "wb") as out:
                for chunk in response.iter_content(CHUNK):
                    out.write(chunk)
                    if time.monotonic() > deadline:
                        raise SourceError(
                            f"{what}: no complete answer within {HTTP_DEADLINE:g} s (the server "
                            f"sends too slowly: {out.tell():,} bytes so far)"
                        )

    def reason(exc: BaseException) -> str:
        """The failure in words, with the exception's name for a search."""
        name = type(exc).__name__
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return f"could not connect within {timeout[0]:g} s ({name})"
        if isinstance(exc, requests.exceptions.ReadTimeout):
            return f"no data for {timeout[1]:g} s ({name})"
        if isinstance(exc, requests.exceptions.ChunkedEncodingError):
            return f"the answer was cut off part-way ({name})"
        if isinstance(exc, requests.ConnectionError):
            return f"cannot connect or the connection was dropped ({name})"
        return str(exc) if isinstance(exc, retry.Transient) else name

    try:
        retry.call(
            get,
            what=what,
            attempts=HTTP_RETRIES,
            backoff=HTTP_BACKOFF,
            on=(retry.Transient, *TRANSIENT),
            within=HTTP_DEADLINE,
            describe=reason,
            logger=log,
        )
    except retry.GaveUp as exc:
        raise SourceError(f"{exc.what}: {exc.reason} after {exc.attempts} {plural(exc.attempts, 'attempt')}") from None


def fetch_to_file(location: str, dest: Path, settings: Settings) -> Path:
    """Make the source at ``location`` available as a local file and return its path.

    ``location`` is an http(s) URL, ``bucket:<key>`` (the report bucket, ``BUCKET``),
    or a local path (returned as is, not copied).
    """
    if location.startswith(("http://", "https://")):
        download_url(location, dest)
        return dest
    if location.startswith("bucket:"):
        open_bucket(settings.bucket, settings).download(location[len("bucket:") :], dest)
        return dest
    path = Path(location[7:] if location.startswith("file://") else location)
    if not path.is_file():
        raise SourceError(f"no file {path}")
    return path


def _status_line(response: requests.Response) -> str:
    """``HTTP 403 Forbidden``, then the server's own words if its short text body adds any
    (HTML pages skipped; a body that only repeats the status is not repeated)."""
    code = response.status_code
    try:
        phrase = response.reason or HTTPStatus(code).phrase
    except ValueError:
        phrase = ""
    line = f"HTTP {code} {phrase}".rstrip()
    if "html" not in response.headers.get("Content-Type", ""):
        text = " ".join(response.text[:200].split())
        if text and not text.startswith(str(code)) and text.lower() != phrase.lower():
            line += f": {text}"
    return line


def _safe_url(url: str) -> str:
    """The URL without its query string, which may carry keys or tokens."""
    parsed = urlparse(url)
    return f"{parsed.scheme}://{parsed.netloc}{parsed.path}" + ("?…" if parsed.query else "")
