"""Publishing: JSON rendering, the all-or-nothing folder sink, and Socrata over HTTPS with faults
(tests/support/soda_server.py): every answer classified, every dataset verified by content."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import bond_calculations
from bond_reporting import calculations as calc
from bond_reporting import logs, render, socrata
from bond_reporting.errors import ConfigError, PublishError, ValidationError
from config import datasets as cfg
from tests.support import ROOT
from tests.support.frames import empty_tables, table
from tests.support.soda_server import SodaFault, SodaServer

KEY_ID = "key-id-Zq81"
KEY_SECRET = "key-secret-Xy92"
APP_TOKEN = "app-token-Wv73"
SECRETS = (KEY_ID, KEY_SECRET, APP_TOKEN)


def expenses_frame(groups: int = 2, dates: int = 5, years: tuple[int, ...] = (2022, 2023, 2024)) -> pd.DataFrame:
    """A raw 2020 expense table with one source row per (fy, date, group) except some gaps (fillers)."""
    rows = []
    for g in range(groups):
        for d in range(dates):
            for fy in years:
                if (g + d + fy) % 3 == 0:
                    continue  # a gap the zero-fill fills
                rows.append((f"F{g}", 6200 + g, f"2023-0{d + 1}-15", f"G{g}", fy, "D1", 10.0 * d, 1.5 * d + g))
    return table(cfg.EXPENSES_2020, rows)


def payloads_for(raw: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return calc.build_payloads({cfg.EXPENSES_2020: raw}, only=["vs3t-h2aj", "jdna-s8qn"])


def expected_rows(frame: pd.DataFrame) -> list[dict]:
    """What the dataset must hold afterwards: the payload exactly as JSON would carry it."""
    return json.loads(json.dumps(socrata.render_records(frame)))


@pytest.fixture
def soda(tmp_path: Path) -> Iterator[SodaServer]:
    server = SodaServer(tmp_path, KEY_ID, KEY_SECRET, cfg.DATASET_IDS).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sleeps() -> list[float]:
    return []


def make_publisher(soda: SodaServer, sleeps: list[float], **overrides) -> socrata.SocrataPublisher:
    options = {
        "app_token": APP_TOKEN,
        "key_id": KEY_ID,
        "key_secret": KEY_SECRET,
        "chunk_size": 7,
        "timeout": 2.0,
        "backoff": 0.01,
        "sleep": sleeps.append,
        "verify": str(soda.ca_path),
    }
    options.update(overrides)
    return socrata.SocrataPublisher(soda.domain, **options)


def methods(soda: SodaServer, dataset: str) -> list[tuple[str, int]]:
    return [(r.method, r.status) for r in soda.requests if r.dataset == dataset]


# ---------------------------------------------------------------------------------------------- rendering


def test_render_records_keeps_json_kinds_order_and_nulls() -> None:
    frame = calc.build_payloads({cfg.EXPENSES_2020: expenses_frame()}, only=["vs3t-h2aj"])["vs3t-h2aj"]
    records = socrata.render_records(frame)
    assert len(records) == len(frame) == 2 * 5 * 3
    assert all(list(r) == list(calc.FIELDS_EXPENSES_2020) for r in records)
    source = next(r for r in records if r["fund"] is not None)
    filler = next(r for r in records if r["fund"] is None)
    assert type(source["department"]) is float and type(source["fiscal_year"]) is int
    assert filler["department"] is None and filler["updated_at"] is None and filler["expenses"] == 0.0
    text = json.dumps([source, filler])
    assert '"department": 6200.0' in text or '"department": 6201.0' in text
    assert '"obligated": 0.0' in text and "NaN" not in text


def test_render_records_refuses_infinity() -> None:
    with pytest.raises(PublishError, match="infinite"):
        socrata.render_records(pd.DataFrame({"x": [1.0, float("inf")]}))


def test_metadata_int_or_float_kinds_survive_rendering() -> None:
    programs = table(cfg.PROGRAM_NAMES, [("P1", "D", 2018, "P", "S", 1, 2), ("P2", "D", 2018, "P", "S", 3, 4)])
    all_found = table(cfg.APPROPRIATIONS, [("P1", "2020-01-01", 5), ("P2", "2020-01-01", 6)])
    one_missing = table(cfg.APPROPRIATIONS, [("P1", "2020-01-01", 5)])
    assert '"appropriated": 5}' in json.dumps(socrata.render_records(calc.all_bonds_metadata(programs, all_found)))
    text = json.dumps(socrata.render_records(calc.all_bonds_metadata(programs, one_missing)))
    assert '"appropriated": 5.0}' in text and '"appropriated": null}' in text


# ---------------------------------------------------------------------------------------------- folder sink


def test_folder_sink_writes_exactly_the_array_that_would_be_sent(tmp_path: Path) -> None:
    frame = payloads_for(expenses_frame())["vs3t-h2aj"]
    sink = socrata.FolderSink(tmp_path / "out", chunk_size=4)  # several chunks joined into one array
    socrata.publish_all(sink, {"vs3t-h2aj": frame, "jdna-s8qn": frame.iloc[:0]})
    text = (tmp_path / "out" / "vs3t-h2aj.json").read_text()
    assert text == json.dumps(socrata.render_records(frame))
    assert (tmp_path / "out" / "jdna-s8qn.json").read_text() == "[]"
    csv = pd.read_csv(tmp_path / "out" / "vs3t-h2aj.csv", dtype=str, keep_default_na=False)
    assert list(csv.columns) == list(calc.FIELDS_EXPENSES_2020) and len(csv) == len(frame)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "jdna-s8qn.csv",
        "jdna-s8qn.json",
        "vs3t-h2aj.csv",
        "vs3t-h2aj.json",
    ]


def folder_state(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


def test_folder_sink_failure_is_one_publish_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(PublishError, match=r"^cannot prepare .*file/out: .*; nothing was written: folder .*$"):
        socrata.publish_all(socrata.FolderSink(blocker / "out"), {"vs3t-h2aj": pd.DataFrame({"a": [1]})})


def test_a_failing_dataset_leaves_the_previous_folder_whole(tmp_path: Path) -> None:
    out = tmp_path / "out"
    good = payloads_for(expenses_frame())
    socrata.publish_all(socrata.FolderSink(out), good)
    before = folder_state(out)
    newer = payloads_for(expenses_frame(dates=6))
    broken = newer["jdna-s8qn"].copy()
    broken.loc[0, "expenses"] = float("inf")  # its rendering raises, after vs3t-h2aj was written
    with pytest.raises(socrata.PublishFailed) as info:
        socrata.publish_all(socrata.FolderSink(out), {"vs3t-h2aj": newer["vs3t-h2aj"], "jdna-s8qn": broken})
    assert str(info.value) == (
        f"jdna-s8qn: column expenses holds an infinite number, which JSON cannot carry; nothing was written: "
        f"folder {out} keeps its previous content"
    )
    assert [r.state for r in info.value.results] == [socrata.UNCHANGED, socrata.UNCHANGED]
    assert folder_state(out) == before  # vs3t-h2aj.json too: nothing of the failed run is visible
    assert leftovers(out) == []


def test_only_some_datasets_keeps_the_others_and_extra_files_join_the_commit(tmp_path: Path) -> None:
    out = tmp_path / "out"
    payloads = payloads_for(expenses_frame())
    socrata.publish_all(socrata.FolderSink(out), payloads)
    old_jdna = (out / "jdna-s8qn.json").read_bytes()
    sink = socrata.FolderSink(out)
    results: list[socrata.DatasetResult] = []
    sink.add_file("report.html", lambda: f"<p>{[r.dataset_id for r in results]}</p>")
    newer = payloads_for(expenses_frame(dates=6))["vs3t-h2aj"]
    socrata.publish_all(sink, {"vs3t-h2aj": newer}, on_result=results.append)
    assert (out / "vs3t-h2aj.json").read_bytes() == b"".join(render.json_array(newer))
    assert (out / "jdna-s8qn.json").read_bytes() == old_jdna  # not selected: kept as it was
    assert (out / "report.html").read_text() == "<p>[]</p>"  # built at commit time, before the results
    assert [(r.dataset_id, r.state, r.rows) for r in results] == [("vs3t-h2aj", socrata.VERIFIED, len(newer))]
    assert leftovers(out) == []


def test_a_failing_extra_file_keeps_the_previous_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    payloads = payloads_for(expenses_frame())
    socrata.publish_all(socrata.FolderSink(out), payloads)
    before = folder_state(out)
    sink = socrata.FolderSink(out)

    def report() -> str:
        raise OSError(28, "No space left on device")

    sink.add_file("report.html", report)
    with pytest.raises(PublishError, match=r"No space left on device.*nothing was written"):
        socrata.publish_all(sink, payloads_for(expenses_frame(dates=6)))
    assert folder_state(out) == before and leftovers(out) == []


def test_stale_staging_of_a_killed_run_is_removed_and_a_live_one_kept(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    stale = tmp_path / ".out.staging-0123456789ab"
    stale.mkdir()
    (stale / "vs3t-h2aj.json").write_text("[half")
    live = tmp_path / ".out.staging-ba9876543210"
    live.mkdir()
    old_tmp = out / ".vs3t-h2aj.json.1a2b3c4d.tmp"
    old_tmp.write_text("[half")
    holder = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(holder, fcntl.LOCK_EX)  # another run, still writing
    try:
        socrata.publish_all(socrata.FolderSink(out), payloads_for(expenses_frame()))
        assert not stale.exists() and not old_tmp.exists()
        assert live.exists()
    finally:
        os.close(holder)
    assert sorted(p.name for p in out.iterdir()) == [
        "jdna-s8qn.csv",
        "jdna-s8qn.json",
        "vs3t-h2aj.csv",
        "vs3t-h2aj.json",
    ]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs (root only; skipped elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_leaves_the_previous_folder_whole(small_disk: Path) -> None:
    out = small_disk / "out"
    socrata.publish_all(socrata.FolderSink(out), payloads_for(expenses_frame()))
    before = folder_state(out)
    big = payloads_for(expenses_frame(groups=150, dates=9))  # about 4 MB of JSON and CSV: does not fit
    with pytest.raises(socrata.PublishFailed, match="No space left on device") as info:
        socrata.publish_all(socrata.FolderSink(out), big)
    assert "\n" not in str(info.value) and str(info.value).endswith(f"folder {out} keeps its previous content")
    assert folder_state(out) == before and leftovers(out) == []


KILLED_WRITER = """
import sys
import numpy as np
import pandas as pd
sys.path.insert(0, {root!r})
from pathlib import Path
from bond_reporting import socrata
rows = 400_000
frame = pd.DataFrame({{"date": ["2023-01-15T00:00:00.000"] * rows, "expenses": np.arange(rows) / 100}})
socrata.publish_all(socrata.FolderSink(Path({out!r})), {{"vs3t-h2aj": frame, "jdna-s8qn": frame, "rrww-ybw6": frame}})
"""


def writing_a_large_file(parent: Path) -> bool:
    """A new (large) payload file is being written in a staging folder under ``parent``."""
    for folder in parent.glob(".out.staging-*"):
        try:
            if any(p.stat().st_size > 1_000_000 for p in folder.iterdir()):
                return True
        except OSError:
            pass  # a file replaced while we looked
    return False


def test_a_run_killed_while_writing_leaves_the_folder_whole_and_the_next_run_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "out"
    socrata.publish_all(socrata.FolderSink(out), payloads_for(expenses_frame()))
    before = folder_state(out)
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER.format(root=str(ROOT), out=str(out))])
    try:
        deadline = time.monotonic() + 60
        while not writing_a_large_file(tmp_path):
            assert child.poll() is None and time.monotonic() < deadline, "the writer ended before it was killed"
            time.sleep(0.01)
        child.kill()  # kill -9 while the payloads are being written
    finally:
        child.wait()
    assert folder_state(out) == before
    assert leftovers(out)  # the killed run's staging folder ...
    socrata.publish_all(socrata.FolderSink(out), payloads_for(expenses_frame(dates=6)))
    assert leftovers(out) == []  # ... is removed by the next run
    assert (out / "vs3t-h2aj.json").read_bytes() == b"".join(
        render.json_array(payloads_for(expenses_frame(dates=6))["vs3t-h2aj"])
    )


# ---------------------------------------------------------------------------------------------- Socrata


def test_publish_replaces_with_first_chunk_then_appends_and_verifies(soda: SodaServer, sleeps: list[float]) -> None:
    frame = payloads_for(expenses_frame())["vs3t-h2aj"]
    socrata.publish_all(make_publisher(soda, sleeps), {"vs3t-h2aj": frame})
    assert soda.datasets["vs3t-h2aj"] == expected_rows(frame)  # the stale row is gone, no duplicates
    # 30 rows in chunks of 7: PUT 7, then 4 POSTs, then the count check.
    assert methods(soda, "vs3t-h2aj") == [("PUT", 200)] + [("POST", 200)] * 4 + [("GET", 200)]
    assert [r.rows for r in soda.requests if r.method != "GET"] == [7, 7, 7, 7, 2]
    assert set(soda.app_tokens) == {APP_TOKEN} and sleeps == []


def test_empty_payload_empties_the_dataset(soda: SodaServer, sleeps: list[float]) -> None:
    socrata.publish_all(make_publisher(soda, sleeps), {"jdna-s8qn": payloads_for(expenses_frame())["vs3t-h2aj"][:0]})
    assert soda.datasets["jdna-s8qn"] == []
    assert methods(soda, "jdna-s8qn") == [("PUT", 200), ("GET", 200)]


def test_500_after_a_chunk_was_applied_restarts_the_dataset_without_duplicates(
    soda: SodaServer, sleeps: list[float]
) -> None:
    frame = payloads_for(expenses_frame())["vs3t-h2aj"]
    soda.faults.append(SodaFault("POST", 500, nth=2, apply_first=True))
    socrata.publish_all(make_publisher(soda, sleeps), {"vs3t-h2aj": frame})
    assert soda.datasets["vs3t-h2aj"] == expected_rows(frame)
    assert methods(soda, "vs3t-h2aj") == (
        [("PUT", 200), ("POST", 200), ("POST", 500)] + [("PUT", 200)] + [("POST", 200)] * 4 + [("GET", 200)]
    )
    assert len(sleeps) == 1  # one backoff before the restart


def test_a_5xx_post_is_never_re_sent_the_dataset_restarts_with_its_put(
    soda: SodaServer, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    frame = payloads_for(expenses_frame())["vs3t-h2aj"]
    soda.faults.append(SodaFault("POST", 503, nth=2))  # not applied, but the client cannot know that
    socrata.publish_all(make_publisher(soda, sleeps), {"vs3t-h2aj": frame})
    assert soda.datasets["vs3t-h2aj"] == expected_rows(frame)
    assert methods(soda, "vs3t-h2aj") == (
        [("PUT", 200), ("POST", 200), ("POST", 503)] + [("PUT", 200)] + [("POST", 200)] * 4 + [("GET", 200)]
    )
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(
        "vs3t-h2aj: publish from the first (replacing) chunk: POST rows 15-21 of 30: HTTP 503: fault injected "
        "(may have been applied); attempt 1 of 4, retrying in "
    )
    assert len(sleeps) == 1 and 0.01 <= sleeps[0] < 0.0125  # the backoff, with jitter


def test_a_5xx_put_is_re_sent_in_place_and_the_warning_names_dataset_rows_and_call(
    soda: SodaServer, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    frame = payloads_for(expenses_frame())["vs3t-h2aj"]
    soda.faults.append(SodaFault("PUT", 503, times=2))
    socrata.publish_all(make_publisher(soda, sleeps), {"vs3t-h2aj": frame})
    assert soda.datasets["vs3t-h2aj"] == expected_rows(frame)
    assert methods(soda, "vs3t-h2aj") == [("PUT", 503)] * 2 + [("PUT", 200)] + [("POST", 200)] * 4 + [("GET", 200)]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [w.split(", retrying in ")[0] for w in warnings] == [
        "vs3t-h2aj: PUT rows 1-7 of 30: HTTP 503: fault injected; attempt 1 of 5",
        "vs3t-h2aj: PUT rows 1-7 of 30: HTTP 503: fault injected; attempt 2 of 5",
    ]
    assert 0.01 <= sleeps[0] < 0.0125 and 0.02 <= sleeps[1] < 0.025  # doubling backoff with jitter


def test_409_without_retry_after_is_re_sent_in_place_after_a_backoff(soda: SodaServer, sleeps: list[float]) -> None:
    frame = payloads_for(expenses_frame())["vs3t-h2aj"]
    soda.faults.append(SodaFault("POST", 409, nth=2))  # the write lock: refused before being applied
    socrata.publish_all(make_publisher(soda, sleeps), {"vs3t-h2aj": frame})
    assert soda.datasets["vs3t-h2aj"] == expected_rows(frame)
    assert methods(soda, "vs3t-h2aj") == [("PUT", 200), ("POST", 200), ("POST", 409)] + [("POST", 200)] * 3 + [
        ("GET", 200)
    ]
    assert len(sleeps) == 1 and 0.01 <= sleeps[0] < 0.0125


def test_a_mismatch_that_persists_fails_naming_the_figures_and_is_not_taken_as_proven(
    soda: SodaServer, sleeps: list[float]
) -> None:
    frame = payloads_for(expenses_frame())["vs3t-h2aj"]
    soda.faults.append(SodaFault("POST", corrupt=True, times=1000))  # every first POST stored changed
    with pytest.raises(PublishError) as info:
        make_publisher(soda, sleeps, restarts=1).publish("vs3t-h2aj", frame)
    message = str(info.value)
    assert message.startswith("vs3t-h2aj: verification after publishing: total_obligated ")
    assert "total_expenses 74.0 (expected 70.00)" in message  # each corrupted row adds 1 to every number
    assert message.endswith(
        "; gave up after 2 attempts at the whole dataset (the dataset may now hold only part of the new rows)"
    )
    assert [m for m, _ in methods(soda, "vs3t-h2aj")] == (["PUT"] + ["POST"] * 4 + ["GET"]) * 2  # no extra check
    assert len(sleeps) == 1


@pytest.mark.parametrize("fault", ["cut", "not_json"])
def test_an_applied_upsert_whose_answer_is_cut_or_garbled_restarts_the_dataset(
    soda: SodaServer, sleeps: list[float], fault: str
) -> None:
    frame = payloads_for(expenses_frame())["vs3t-h2aj"]
    soda.faults.append(SodaFault("POST", nth=2, **{fault: True}))
    make_publisher(soda, sleeps).publish("vs3t-h2aj", frame)
    assert soda.datasets["vs3t-h2aj"] == expected_rows(frame)  # complete, nothing duplicated
    assert [m for m, _ in methods(soda, "vs3t-h2aj")].count("PUT") == 2  # restarted from the replace


def test_429_honours_retry_after_and_resends_the_same_chunk(soda: SodaServer, sleeps: list[float]) -> None:
    frame = payloads_for(expenses_frame())["vs3t-h2aj"]
    soda.faults.append(SodaFault("POST", 429, nth=3, retry_after="7"))
    socrata.publish_all(make_publisher(soda, sleeps), {"vs3t-h2aj": frame})
    assert soda.datasets["vs3t-h2aj"] == expected_rows(frame)
    assert sleeps == [7.0]
    assert methods(soda, "vs3t-h2aj").count(("PUT", 200)) == 1  # a refused request is re-sent in place


def test_413_halves_the_chunk_size_and_restarts(soda: SodaServer, sleeps: list[float]) -> None:
    frame = payloads_for(expenses_frame())["vs3t-h2aj"]
    chunk_bytes = len(json.dumps(socrata.render_records(frame, 0, 4)))
    soda.max_body_bytes = chunk_bytes + 50  # 4 rows fit, 7 do not
    publisher = make_publisher(soda, sleeps)
    socrata.publish_all(publisher, {"vs3t-h2aj": frame})
    assert publisher.chunk_size == 3
    assert soda.datasets["vs3t-h2aj"] == expected_rows(frame)
    calls = methods(soda, "vs3t-h2aj")
    assert calls[0] == ("PUT", 413) and calls[1] == ("PUT", 200)
    assert [r.rows for r in soda.requests if r.status == 200 and r.method != "GET"] == [3] * 10


def test_read_timeout_after_applying_an_upsert_restarts_the_dataset(soda: SodaServer, sleeps: list[float]) -> None:
    frame = payloads_for(expenses_frame())["vs3t-h2aj"]
    soda.faults.append(SodaFault("POST", nth=2, apply_first=True, delay=1.2))
    socrata.publish_all(make_publisher(soda, sleeps, timeout=0.4), {"vs3t-h2aj": frame})
    assert soda.datasets["vs3t-h2aj"] == expected_rows(frame)
    assert [m for m, _ in methods(soda, "vs3t-h2aj")].count("PUT") == 2


def test_timeouts_and_gateway_errors_on_put_and_count_are_retried_in_place(
    soda: SodaServer, sleeps: list[float]
) -> None:
    frame = payloads_for(expenses_frame())["vs3t-h2aj"]
    soda.faults += [
        SodaFault("PUT", nth=1, apply_first=True, delay=1.2),  # applied, but the answer comes too late
        SodaFault("PUT", 502, nth=1, html=True),  # a gateway page, not JSON
        SodaFault("GET", 503, nth=1),
    ]
    socrata.publish_all(make_publisher(soda, sleeps, timeout=0.4), {"vs3t-h2aj": frame})
    assert soda.datasets["vs3t-h2aj"] == expected_rows(frame)
    assert len(sleeps) == 3


def test_a_lost_write_is_caught_by_the_count_check_and_the_dataset_restarted(
    soda: SodaServer, sleeps: list[float]
) -> None:
    frame = payloads_for(expenses_frame())["vs3t-h2aj"]
    soda.faults.append(SodaFault("POST", nth=4, lose=True))  # 200 and "Rows Created": 7, but nothing stored
    socrata.publish_all(make_publisher(soda, sleeps), {"vs3t-h2aj": frame})
    assert soda.datasets["vs3t-h2aj"] == expected_rows(frame)
    assert [m for m, _ in methods(soda, "vs3t-h2aj")] == (["PUT"] + ["POST"] * 4 + ["GET"]) * 2


def test_unrecoverable_failure_names_what_was_and_was_not_published(
    soda: SodaServer, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    payloads = payloads_for(expenses_frame())
    payloads["mri6-eexh"] = payloads["jdna-s8qn"]
    soda.faults.append(SodaFault("POST", 500, dataset="jdna-s8qn", times=1000))
    with caplog.at_level(logging.DEBUG), pytest.raises(PublishError) as info:
        socrata.publish_all(make_publisher(soda, sleeps, restarts=2), payloads)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("jdna-s8qn: POST rows 8-14")
    assert message.endswith(
        "gave up after 3 attempts at the whole dataset (the dataset may now hold only part of the new rows); "
        "replaced and verified: vs3t-h2aj; unchanged: mri6-eexh"
    )
    assert [(r.dataset_id, r.state) for r in info.value.results] == [
        ("vs3t-h2aj", socrata.VERIFIED),
        ("jdna-s8qn", socrata.PARTIAL),
        ("mri6-eexh", socrata.UNCHANGED),
    ]
    assert soda.datasets["vs3t-h2aj"] == expected_rows(payloads["vs3t-h2aj"])
    assert methods(soda, "jdna-s8qn").count(("PUT", 200)) == 3  # first try + 2 restarts
    assert methods(soda, "mri6-eexh") == []
    for secret in SECRETS:
        assert secret not in message and secret not in caplog.text


def test_bad_credentials_fail_at_once_without_leaking_them(soda: SodaServer, sleeps: list[float]) -> None:
    frame = payloads_for(expenses_frame())["vs3t-h2aj"]
    publisher = make_publisher(soda, sleeps, key_secret="wrong-secret-3141")
    with pytest.raises(PublishError, match=r"^vs3t-h2aj: PUT rows 1-7 of 30: HTTP 401: Invalid credentials ") as info:
        socrata.publish_all(publisher, {"vs3t-h2aj": frame})
    assert len(soda.requests) == 1 and sleeps == []
    assert "(the dataset is unchanged)" in str(info.value)
    assert "wrong-secret-3141" not in str(info.value) and KEY_ID not in str(info.value)


def real_sleep(sleeps: list[float]):
    """Records each wait and really waits a little, so that a write applied later (202) shows."""

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        time.sleep(min(seconds, 0.05))

    return sleep


def old_rows(count: int) -> list[dict]:
    return [{"old": "row", "expenses": 1.0} for _ in range(count)]


def test_202_is_waited_for_and_never_re_sent(soda: SodaServer, sleeps: list[float]) -> None:
    frame = payloads_for(expenses_frame())["vs3t-h2aj"]
    soda.faults.append(SodaFault("POST", nth=2, accepted=True, apply_after=0.3))
    socrata.publish_all(make_publisher(soda, sleeps, sleep=real_sleep(sleeps)), {"vs3t-h2aj": frame})
    assert soda.datasets["vs3t-h2aj"] == expected_rows(frame)  # complete, the 202 chunk applied once
    writes = [(m, st) for m, st in methods(soda, "vs3t-h2aj") if m != "GET"]
    assert writes == [("PUT", 200), ("POST", 200), ("POST", 202), ("POST", 200), ("POST", 200)]


def test_202_on_a_dataset_whose_old_rows_have_the_same_count_is_not_taken_as_done(
    soda: SodaServer, sleeps: list[float]
) -> None:
    frame = payloads_for(expenses_frame())["vs3t-h2aj"]
    soda.datasets["vs3t-h2aj"] = old_rows(len(frame))  # count(*) alone would already say "done"
    soda.faults.append(SodaFault("PUT", accepted=True, apply_after=0.4))
    publisher = make_publisher(soda, sleeps, chunk_size=100, sleep=real_sleep(sleeps))
    result = publisher.publish("vs3t-h2aj", frame)
    assert result.state == socrata.VERIFIED
    assert soda.datasets["vs3t-h2aj"] == expected_rows(frame)
    assert [m for m, _ in methods(soda, "vs3t-h2aj")].count("PUT") == 1 and len(sleeps) >= 2


def test_202_that_never_shows_fails_as_possibly_partial_without_re_sending(
    soda: SodaServer, sleeps: list[float]
) -> None:
    frame = payloads_for(expenses_frame())["vs3t-h2aj"]
    soda.datasets["vs3t-h2aj"] = old_rows(len(frame))
    soda.faults.append(SodaFault("PUT", accepted=True, apply_after=None))
    # The bound is in real seconds: the waits are real (each at most 0.05 s).
    publisher = make_publisher(soda, sleeps, chunk_size=100, processing_timeout=1.0, sleep=real_sleep(sleeps))
    with pytest.raises(socrata.PublishFailed) as info:
        socrata.publish_all(publisher, {"vs3t-h2aj": frame})
    message = str(info.value)
    assert message.startswith(
        "vs3t-h2aj: PUT rows 1-30 of 30: Socrata answered 202 (still processing) and the dataset did not show "
        "the rows within "
    )
    assert "total_expenses" in message  # what differs
    assert message.endswith(
        "(the dataset may now hold only part of the new rows); replaced and verified: none; unchanged: none"
    )
    assert [r.state for r in info.value.results] == [socrata.PARTIAL]
    assert soda.datasets["vs3t-h2aj"] == old_rows(len(frame))
    assert [m for m, _ in methods(soda, "vs3t-h2aj")].count("PUT") == 1  # never re-sent


def test_a_message_only_200_is_refused_with_the_servers_message_and_not_retried(
    soda: SodaServer, sleeps: list[float]
) -> None:
    frame = payloads_for(expenses_frame())["vs3t-h2aj"]
    soda.faults.append(SodaFault("PUT", message="Cannot update a synced dataset manually"))
    with pytest.raises(socrata.PublishFailed) as info:
        socrata.publish_all(make_publisher(soda, sleeps), {"vs3t-h2aj": frame, "mri6-eexh": frame.iloc[:0]})
    assert str(info.value) == (
        "vs3t-h2aj: PUT rows 1-7 of 30: Socrata refused the write: Cannot update a synced dataset manually "
        "(HTTP 200 without counts) (the dataset is unchanged); replaced and verified: none; unchanged: mri6-eexh"
    )
    assert methods(soda, "vs3t-h2aj") == [("PUT", 200)] and sleeps == []
    assert soda.datasets["vs3t-h2aj"] == [{"old": "row"}]


def test_a_replace_answered_rows_updated_is_fine_once_verified(soda: SodaServer, sleeps: list[float]) -> None:
    frame = payloads_for(expenses_frame())["vs3t-h2aj"]
    soda.faults.append(SodaFault("PUT", updated=True))
    [result] = [socrata.SocrataPublisher.publish(make_publisher(soda, sleeps), "vs3t-h2aj", frame)]
    assert result.state == socrata.VERIFIED
    assert soda.datasets["vs3t-h2aj"] == expected_rows(frame)
    assert methods(soda, "vs3t-h2aj") == [("PUT", 200)] + [("POST", 200)] * 4 + [("GET", 200)]


def test_row_errors_fail_as_possibly_partial(soda: SodaServer, sleeps: list[float]) -> None:
    frame = payloads_for(expenses_frame())["vs3t-h2aj"]
    soda.faults.append(SodaFault("POST", nth=2, errors=3))
    with pytest.raises(
        PublishError,
        match=r"^vs3t-h2aj: POST rows 15-21 of 30: Socrata reported 3 row errors \(the "
        r"dataset may now hold only part of the new rows\)",
    ):
        make_publisher(soda, sleeps).publish("vs3t-h2aj", frame)


def test_content_is_verified_not_only_the_count(soda: SodaServer, sleeps: list[float]) -> None:
    frame = payloads_for(expenses_frame())["vs3t-h2aj"]
    soda.faults.append(SodaFault("POST", nth=2, corrupt=True))  # stored with one amount changed
    result = make_publisher(soda, sleeps).publish("vs3t-h2aj", frame)
    assert result.state == socrata.VERIFIED
    assert soda.datasets["vs3t-h2aj"] == expected_rows(frame)
    assert [m for m, _ in methods(soda, "vs3t-h2aj")] == (["PUT"] + ["POST"] * 4 + ["GET"]) * 2  # restarted once


def test_figures_are_exact_decimals_as_socrata_sums_them(soda: SodaServer) -> None:
    frame = pd.DataFrame(
        {
            "date": ["2023-01-15T00:00:00.000", "2022-12-01T00:00:00.000", None],
            "expenses": [0.1, 0.2, 64703.38],  # 0.1 + 0.2 is 0.30000000000000004 in floats
        }
    )
    figures = socrata.payload_figures(frame)
    assert figures == {
        "row_count": "3",
        "total_expenses": "64703.68",
        "min_date": "2022-12-01T00:00:00.000",
        "max_date": "2023-01-15T00:00:00.000",
    }
    lookup = socrata.payload_figures(pd.DataFrame({"aims_dept_prog_act": ["b", "a"], "dashboard": ["x", "y"]}))
    assert lookup == {"row_count": "2", "min_aims_dept_prog_act": "a", "max_aims_dept_prog_act": "b"}
    odd = socrata.payload_figures(pd.DataFrame({"expenses": [1e-05, 1 / 3]}))
    assert odd["total_expenses"] == "0.3333433333333333"


def test_a_failure_whose_dataset_is_proven_complete_is_not_a_failure(soda: SodaServer, sleeps: list[float]) -> None:
    frame = payloads_for(expenses_frame())["vs3t-h2aj"]
    soda.faults.append(SodaFault("POST", 500, nth=4, apply_first=True))  # the last chunk: applied, answer lost
    result = make_publisher(soda, sleeps, restarts=0).publish("vs3t-h2aj", frame)
    assert result.state == socrata.VERIFIED
    assert soda.datasets["vs3t-h2aj"] == expected_rows(frame)


def test_progress_lines_at_info_and_the_app_token_warning_once(
    soda: SodaServer, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    payloads = payloads_for(expenses_frame())
    publisher = make_publisher(soda, sleeps, app_token=None, progress_interval=0.0)
    with caplog.at_level(logging.INFO):
        socrata.publish_all(publisher, payloads)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert "vs3t-h2aj: publishing: 7 / 30 rows (23%)" in "\n".join(lines)
    assert any(line.startswith("vs3t-h2aj: publishing: 28 / 30 rows (93%), ") and " left" in line for line in lines)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["SO_TOKEN is not set: Socrata throttles requests without an app token"]
    assert set(soda.app_tokens) == {None}


def test_a_server_that_cannot_be_reached_leaves_the_dataset_unchanged(sleeps: list[float]) -> None:
    publisher = socrata.SocrataPublisher("127.0.0.1:1", key_id=KEY_ID, key_secret=KEY_SECRET, sleep=sleeps.append)
    with pytest.raises(socrata.PublishFailed) as info:
        socrata.publish_all(publisher, {"vs3t-h2aj": pd.DataFrame({"a": [1]})})
    assert str(info.value) == (
        "vs3t-h2aj: PUT rows 1-1 of 1: cannot connect to 127.0.0.1:1: Connection refused; gave up after 5 attempts "
        "(the dataset is unchanged); replaced and verified: none; unchanged: none"
    )
    assert len(sleeps) == 4


def test_untrusted_certificate_is_refused(soda: SodaServer, sleeps: list[float]) -> None:
    publisher = make_publisher(soda, sleeps, verify=True)  # the system store does not know our test CA
    with pytest.raises(PublishError, match="TLS error"):
        publisher.publish("vs3t-h2aj", pd.DataFrame({"a": [1]}))
    assert soda.requests == []


def test_a_failing_calculation_publishes_nothing(soda: SodaServer, sleeps: list[float]) -> None:
    tables = {**empty_tables(), cfg.EXPENSES_2020: expenses_frame()}
    # The summaries (built after vs3t/jdna/rrww) cannot be computed: the current plan is empty.
    with pytest.raises(
        ValidationError, match="current_fy_spend_plan is empty"
    ):  # every payload first, as the step does
        socrata.publish_all(make_publisher(soda, sleeps), calc.build_payloads(tables))
    assert soda.requests == []
    assert soda.datasets["vs3t-h2aj"] == [{"old": "row"}]


@pytest.mark.parametrize(
    ("value", "domain"),
    [("data.example.org", "data.example.org"), ("https://data.example.org/", "data.example.org"), ("h:8443", "h:8443")],
)
def test_socrata_domain_accepts_bare_or_https(value: str, domain: str) -> None:
    assert socrata.socrata_domain(value) == domain


@pytest.mark.parametrize("value", ["http://data.example.org", "https://data.example.org/resource", ""])
def test_socrata_domain_refuses_http_and_paths(value: str) -> None:
    with pytest.raises(ConfigError, match="SO_WEB"):
        socrata.socrata_domain(value)


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_without_socrata_settings_exits_2_naming_the_variable(caplog: pytest.LogCaptureFixture) -> None:
    assert bond_calculations.main([]) == 2
    assert "missing setting SO_WEB" in caplog.text


def test_cli_rejects_unknown_dataset_ids_and_bad_chunk_sizes(capsys: pytest.CaptureFixture) -> None:
    assert bond_calculations.main(["--only", "abcd-1234", "--output-dir", "x"]) == 2
    assert "argument --only: invalid choice: 'abcd-1234'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="chunk-size"):
        bond_calculations.run(output_dir="x", chunk_size=0)


# ---------------------------------------------------------------------------------------------- CLI end to end

E2E_KEY, E2E_SECRET = "cli-key-id-5521", "cli-key-secret-7730"


@pytest.fixture
def soda_env(soda: SodaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SodaServer:
    soda.key_id, soda.key_secret = E2E_KEY, E2E_SECRET
    monkeypatch.setenv("SO_WEB", soda.domain)
    monkeypatch.setenv("SO_KEY", E2E_KEY)
    monkeypatch.setenv("SO_SECRET", E2E_SECRET)
    monkeypatch.setenv("SO_TOKEN", APP_TOKEN)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(soda.ca_path))
    monkeypatch.setenv("BUCKET", str(tmp_path / "bucket"))
    return soda


def error_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def folder_payloads(tmp_path: Path) -> dict[str, list]:
    out = tmp_path / "expected"
    assert bond_calculations.main(["--output-dir", str(out)]) == 0
    return {i: json.loads((out / f"{i}.json").read_text()) for i in cfg.DATASET_IDS}


def test_cli_so_web_with_credentials_exits_2_without_echoing_them(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("SO_WEB", "etl-user:s3cret-Pa55@data.example.org")
    monkeypatch.setenv("SO_KEY", "k")
    monkeypatch.setenv("SO_SECRET", "s")
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")  # never reached
    assert bond_calculations.main([]) == 2
    assert error_lines(caplog) == [
        "bond_calculations failed: SO_WEB must not contain credentials (user:password@…): "
        "put the API key in SO_KEY and SO_SECRET"
    ]
    output = capsys.readouterr()
    assert "s3cret-Pa55" not in output.out + output.err + caplog.text and "etl-user" not in caplog.text
    assert logs.redact("SO_WEB=etl-user:s3cret-Pa55@data.example.org") == "SO_WEB=***@data.example.org"


def test_cli_why_4_a_202_is_waited_for_and_verified_by_content(
    loaded_own: str, soda_env: SodaServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    expected = folder_payloads(tmp_path)
    rows = len(expected["vs3t-h2aj"])
    soda_env.datasets["vs3t-h2aj"] = old_rows(rows)  # same row count as the new payload
    soda_env.faults.append(SodaFault("PUT", dataset="vs3t-h2aj", accepted=True, apply_after=1.0))
    with caplog.at_level(logging.INFO):
        assert bond_calculations.main(["--chunk-size", str(rows)]) == 0
    assert error_lines(caplog) == []
    assert "vs3t-h2aj: PUT rows 1-" in caplog.text and "applied after" in caplog.text
    for dataset_id in cfg.DATASET_IDS:
        assert soda_env.datasets[dataset_id] == expected[dataset_id]
    assert [r.method for r in soda_env.requests if r.dataset == "vs3t-h2aj"].count("PUT") == 1


def test_cli_why_5_a_synced_dataset_is_refused_with_its_message_and_left_unchanged(
    loaded_own: str, soda_env: SodaServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    expected = folder_payloads(tmp_path)
    before = list(soda_env.datasets["hq9n-d77y"])
    soda_env.faults.append(SodaFault("PUT", dataset="hq9n-d77y", message="Cannot update a synced dataset manually"))
    soda_env.faults.append(SodaFault("PUT", dataset="vs3t-h2aj", updated=True))  # "Rows Updated": fine
    assert bond_calculations.main([]) == 1
    [line] = error_lines(caplog)
    assert line.startswith("bond_calculations failed: hq9n-d77y: PUT rows 1-")
    assert line.endswith(
        "Socrata refused the write: Cannot update a synced dataset manually (HTTP 200 without counts) "
        "(the dataset is unchanged); replaced and verified: vs3t-h2aj, jdna-s8qn, rrww-ybw6; "
        "unchanged: 5ewg-ssu3, 9ufs-k2md, mri6-eexh"
    )
    assert soda_env.datasets["hq9n-d77y"] == before
    for dataset_id in ("vs3t-h2aj", "jdna-s8qn", "rrww-ybw6"):
        assert soda_env.datasets[dataset_id] == expected[dataset_id]
    for dataset_id in ("5ewg-ssu3", "9ufs-k2md", "mri6-eexh"):
        assert soda_env.datasets[dataset_id] == [{"old": "row"}]
    assert [(r.method, r.status) for r in soda_env.requests if r.dataset == "hq9n-d77y"] == [("PUT", 200)]
