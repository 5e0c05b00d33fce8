"""Real services for the tests, all on loopback: PostgreSQL, an S3 endpoint, HTTP file servers.

PostgreSQL is the embedded server (pgserver) unless ``DATABASE_URL`` is set, in which
case each test still gets a database of its own created on that server.
"""

from __future__ import annotations

import http.server
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
from psycopg2 import sql


def admin_uri(base_uri: str, database: str) -> str:
    """The same server's URI for another database (libpq URI, query string kept)."""
    head, sep, query = base_uri.partition("?")
    scheme_host, _slash, _db = head.rpartition("/")
    return f"{scheme_host}/{database}{sep}{query}"


@contextmanager
def fresh_database(server_uri: str) -> Iterator[str]:
    """Create an empty database on the server, yield its URI, drop it afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = psycopg2.connect(server_uri)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield admin_uri(server_uri, name)
    finally:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.close()


@dataclass
class Fault:
    """What the file server does for one path: an HTTP status, a delay, or a dropped connection."""

    status: int | None = None
    delay: float = 0.0
    drop: bool = False
    cut: bool = False  # announce the whole body, send half of it, close the connection
    trickle: float = (
        0.0  # seconds between single bytes of the body (a server that never stalls long enough to time out)
    )
    times: int | None = None  # None: always; N: only the first N requests


@dataclass
class FileServer:
    """Serves files from ``root`` over HTTP on loopback, with per-path faults."""

    root: Path
    faults: dict[str, Fault] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    _server: http.server.ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def start(self) -> FileServer:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?")[0].lstrip("/")
                owner.requests.append(path)
                fault = owner.faults.get(path)
                if fault and (fault.times is None or fault.times > 0):
                    if fault.times is not None:
                        fault.times -= 1
                    time.sleep(fault.delay)
                    if fault.drop:
                        self.connection.close()
                        return
                    if fault.status:
                        self.send_error(fault.status)
                        return
                    if fault.cut:
                        body = (owner.root / path).read_bytes()
                        self.send_response(200)
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body[: len(body) // 2])
                        self.wfile.flush()
                        self.connection.close()
                        return
                target = owner.root / path
                if not target.is_file():
                    self.send_error(404)
                    return
                body = target.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "text/csv")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if fault and fault.trickle:
                    try:
                        for byte in body:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(fault.trickle)
                    except OSError:  # the client gave up
                        pass
                    return
                self.wfile.write(body)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()


def s3_client(endpoint: str):
    """A boto3 S3 client for the test endpoint (the test credentials of ``s3_bucket``)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing-key-id",
        aws_secret_access_key="testing-secret-key",
        region_name="us-east-1",
    )
