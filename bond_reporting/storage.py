"""Read and write by location: an S3 bucket, a local folder, an http(s) URL, a local path.

Files are moved as streams through local temporary files, never whole payloads
in memory. Writes are atomic: an S3 put is one object version (a multipart
upload becomes visible only when complete), a local write is a temporary file
in the target folder renamed over the target.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

import requests

from bond_reporting.errors import SourceError
from bond_reporting.settings import Settings

log = logging.getLogger(__name__)

HTTP_TIMEOUT = (10, 120)  # seconds: connect, read (between bytes)
HTTP_RETRIES = 4  # attempts on transient failures (connection errors, time-outs, 429, 5xx)
HTTP_BACKOFF = 1.0  # seconds, doubled after each failed attempt
CHUNK = 1 << 20
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
    """An S3 bucket (AWS, or any S3-protocol endpoint via AWS_ENDPOINT_URL)."""

    name: str
    settings: Settings

    @property
    def description(self) -> str:
        return f"s3://{self.name}"

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

    def download(self, key: str, dest: Path) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client().download_file(self.name, key, str(dest))
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchKey", "NoSuchBucket"):
                raise SourceError(f"{self.description}: no object {key!r} ({code})") from None
            raise SourceError(f"{self.description}/{key}: S3 error {code}: {exc}") from None
        except BotoCoreError as exc:
            raise SourceError(f"{self.description}/{key}: {exc}") from None

    def upload(self, src: Path, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client().upload_file(str(src), self.name, key, ExtraArgs={"ContentType": "text/csv"})
        except (BotoCoreError, ClientError) as exc:
            raise SourceError(f"upload to {self.description}/{key} failed: {exc}") from None


def open_bucket(location: str, settings: Settings) -> Bucket:
    """``BUCKET`` value → bucket: ``file://dir`` or a path (has ``/`` or starts with ``.``) is a
    local folder, anything else (``name`` or ``s3://name``) an S3 bucket."""
    if location.startswith("file://"):
        return LocalBucket(Path(unquote(urlparse(location).path)))
    if location.startswith("s3://"):
        return S3Bucket(location[5:].strip("/"), settings)
    if "/" in location or location.startswith("."):
        return LocalBucket(Path(location))
    return S3Bucket(location, settings)


def write_file_atomically(src: Path, target: Path) -> None:
    """Copy ``src`` to ``target`` through a temporary file in the same folder + rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, CHUNK)
        Path(tmp).chmod(0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def download_url(url: str, dest: Path, *, timeout: tuple[float, float] | None = None) -> None:
    """Stream an http(s) URL to ``dest``; retry transient failures with backoff."""
    timeout = timeout or HTTP_TIMEOUT
    delay = HTTP_BACKOFF
    for attempt in range(1, HTTP_RETRIES + 1):
        try:
            with requests.get(url, stream=True, timeout=timeout) as response:
                if response.status_code == 429 or response.status_code >= 500:
                    raise _Transient(_status_line(response))
                if response.status_code >= 400:
                    raise SourceError(f"GET {_safe_url(url)}: {_status_line(response)}", retryable=False)
                with open(dest, "wb") as out:
                    for chunk in response.iter_content(CHUNK):
                        out.write(chunk)
            return
        except (
            _Transient,
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
        ) as exc:
            reason = str(exc) if isinstance(exc, _Transient) else type(exc).__name__
            if attempt == HTTP_RETRIES:
                raise SourceError(f"GET {_safe_url(url)}: {reason} after {attempt} attempts") from None
            log.warning("GET %s: %s; retrying in %.0f s", _safe_url(url), reason, delay)
            time.sleep(delay)
            delay *= 2


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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class _Transient(Exception):
    """An HTTP answer worth retrying."""


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
