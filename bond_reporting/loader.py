"""The load step: read every source, validate all of them, then replace every table in one transaction.

Nothing touches the database until every selected source has been read and validated; the
tables are then replaced with COPY inside a single transaction, committed once. Any failure
leaves every table with its previous rows.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import pandas as pd

from bond_reporting import database, storage
from bond_reporting.errors import ConfigError, EtlError
from bond_reporting.settings import Settings
from bond_reporting.validation import map_columns, parse_and_validate, read_csv_as_text

log = logging.getLogger(__name__)


@dataclass
class PreparedSource:
    """A validated source, ready to COPY: either its own file bytes or a re-serialised CSV."""

    name: str
    table: str
    rows: int
    newest_date: str | None
    columns: list[str]  # table columns in the order the COPY stream carries them
    path: Path
    raw: bool  # True: `path` is the source file itself, header line included
    seconds: float


def select_sources(sources: Sequence[dict], only: Sequence[str] | None) -> list[dict]:
    """The configured sources, or those whose table is named in ``only`` (unknown names: exit 2)."""
    if not only:
        return list(sources)
    known = [source["table"] for source in sources]
    unknown = [name for name in only if name not in known]
    if unknown:
        raise ConfigError(f"unknown table(s) {unknown}; configured tables: {', '.join(known)}")
    return [source for source in sources if source["table"] in only]


def source_location(source: dict, from_dir: str | None, sheets_dir: str | None) -> str:
    """Where to read ``source``: ``from_dir`` overrides all, ``sheets_dir`` the http(s) sheets."""
    if from_dir:
        return str(Path(from_dir) / f"{source['table']}.csv")
    if sheets_dir and source["url"].startswith(("http://", "https://")):
        return str(Path(sheets_dir) / f"{source['table']}.csv")
    return source["url"]


def prepare_source(source: dict, location: str, workdir: Path, settings: Settings) -> PreparedSource:
    """Fetch, read as text, map, parse and validate one source; stage its COPY input in ``workdir``."""
    started = time.perf_counter()
    label = f"{source['name']} ({source['table']})"
    try:
        path = storage.fetch_to_file(location, workdir / f"{source['table']}.download", settings)
    except EtlError as exc:
        raise type(exc)(f"{label}: {exc}") from None
    text = read_csv_as_text(path, label)
    mapped = map_columns(text, source["field_maps"], label)
    frame = parse_and_validate(mapped, source["schema"], label)
    date_field = source.get("date_field")
    newest = frame[date_field].max().strftime("%Y-%m-%d") if date_field else None
    header_to_column = source["field_maps"]
    if set(text.columns) == set(header_to_column) and _streams_as_is(path):
        # Validated bytes go to COPY untouched (column list in the file's header order).
        columns, staged, raw = [header_to_column[h] for h in text.columns], path, True
    else:
        columns, staged, raw = list(frame.columns), workdir / f"{source['table']}.copy.csv", False
        _write_copy_csv(frame, date_field, staged)
    return PreparedSource(
        source["name"], source["table"], len(frame), newest, columns, staged, raw, time.perf_counter() - started
    )


def load_sources(
    settings: Settings,
    sources: Sequence[dict],
    *,
    from_dir: str | None = None,
    sheets_dir: str | None = None,
    only: Sequence[str] | None = None,
) -> list[PreparedSource]:
    """Validate every selected source, then replace their tables atomically. Returns what was loaded."""
    selected = select_sources(sources, only)
    with tempfile.TemporaryDirectory(prefix="bond-load-") as tmp:
        prepared = []
        for source in selected:
            item = prepare_source(source, source_location(source, from_dir, sheets_dir), Path(tmp), settings)
            log.info("validated %s: %d rows in %.2f s", item.table, item.rows, item.seconds)
            prepared.append(item)
        loaded_at = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
        started = time.perf_counter()
        with database.transaction(settings) as conn:
            database.apply_schema(conn)
            streams = [_open_stream(item, loaded_at) for item in prepared]
            try:
                database.replace_tables(
                    conn,
                    (
                        database.TableCopy(item.table, [*item.columns, "updated_at"], stream, header=item.raw)
                        for item, stream in zip(prepared, streams, strict=True)
                    ),
                )
            finally:
                for stream in streams:
                    stream.close()
        seconds = time.perf_counter() - started
    for item in prepared:
        newest = f", newest date {item.newest_date}" if item.newest_date else ""
        log.info("loaded %s: %d rows%s", item.table, item.rows, newest)
    log.info(
        "load committed: %d tables, %d rows, updated_at %s UTC, COPY + commit %.2f s",
        len(prepared),
        sum(item.rows for item in prepared),
        loaded_at,
        seconds,
    )
    return prepared


def _streams_as_is(path: Path) -> bool:
    """True when the file's bytes can go to COPY as they are: no quoting, no CR, no blank lines."""
    previous = b"\n"
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            if b'"' in chunk or b"\r" in chunk or b"\n\n" in previous + chunk:
                return False
            previous = chunk[-1:]
    return True


def _write_copy_csv(frame: pd.DataFrame, date_field: str | None, path: Path) -> None:
    out = frame
    if date_field:
        out = frame.assign(**{date_field: frame[date_field].dt.strftime("%Y-%m-%d")})
    # repr-exact floats: what was validated is what is stored.
    out.to_csv(path, index=False, header=False, float_format=None, lineterminator="\n")


def _open_stream(item: PreparedSource, loaded_at: str) -> IO[bytes]:
    return AppendColumn(open(item.path, "rb"), f",{loaded_at}".encode())


class AppendColumn:
    """A binary reader yielding the wrapped file with ``suffix`` inserted before every newline
    (and after a last line that has none): adds the ``updated_at`` column without parsing the CSV."""

    def __init__(self, handle: IO[bytes], suffix: bytes) -> None:
        self._handle = handle
        self._suffix = suffix
        self._newline = suffix + b"\n"
        self._ended_with_newline = True
        self._done = False

    def read(self, size: int = -1) -> bytes:
        chunk = self._handle.read(size if size and size > 0 else 1 << 20)
        if chunk:
            self._ended_with_newline = chunk.endswith(b"\n")
            return chunk.replace(b"\n", self._newline)
        if not self._done and not self._ended_with_newline:
            self._done = True
            return self._newline
        return b""

    def close(self) -> None:
        self._handle.close()
