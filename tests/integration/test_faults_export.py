"""Faults of the export (issue 13 items 2, 3, 5; issue 9 items 7, 9): nothing hangs, a stop is clean,
settings are validated, every error is one line naming the report, and the previous bucket object or
``--output`` file is never touched. Real services: the MicroStrategy protocol server, moto's S3 server,
the script as a subprocess where a signal is involved.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import microstrategy_to_s3
from bond_reporting import microstrategy
from scripts.mstr_server import ALL_BONDS_ID, Fault, MstrServer, generated_report
from tests.support import ROOT
from tests.support.mstr_support import FAST, PASSWORD, PROJECT_ID, USERNAME, all_bonds_report
from tests.support.services import s3_client

ALL_BONDS = "All bonds Expenses Obligated"
KEY = f"{ALL_BONDS}.csv"
PREVIOUS = b"previous,good\n1,2\n"
LABEL = f"MicroStrategy report '{ALL_BONDS}'"


@pytest.fixture
def env(monkeypatch, tmp_path):
    """MicroStrategy settings for a server started later; TMPDIR is a folder of the test (leftovers visible)."""
    temp = tmp_path / "tmpdir"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr("tempfile.tempdir", None)  # re-read TMPDIR
    monkeypatch.setattr(microstrategy, "DEFAULT_POLICY", FAST)
    for name, value in {"PROJECT_ID": PROJECT_ID, "MSTRO_USERNAME": USERNAME, "MSTRO_PASSWORD": PASSWORD}.items():
        monkeypatch.setenv(name, value)
    return temp


@pytest.fixture
def server(env, tmp_path, monkeypatch):
    report, _text = all_bonds_report(tmp_path)
    with MstrServer([report], username=USERNAME, password=PASSWORD, project_id=PROJECT_ID) as srv:
        monkeypatch.setenv("BASE_URL", srv.base_url)
        yield srv


@pytest.fixture
def previous(s3_bucket, s3_endpoint):
    """The bucket holds a previous good object; returns a function asserting it is untouched."""
    client = s3_client(s3_endpoint)
    client.put_object(Bucket=s3_bucket, Key=KEY, Body=PREVIOUS)

    def untouched() -> None:
        assert client.get_object(Bucket=s3_bucket, Key=KEY)["Body"].read() == PREVIOUS
        assert [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]] == [KEY]
        assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []

    return untouched


def error_line(caplog) -> str:
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    return errors[0]


@pytest.fixture
def silent_port():
    """A server that accepts connections (the kernel completes them) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


# --- every wait is bounded (issue 13 item 2) -------------------------------------------------------


def test_a_silent_server_ends_the_export_in_seconds_with_one_line(env, silent_port, monkeypatch, previous, caplog):
    monkeypatch.setattr(microstrategy, "DEFAULT_POLICY", microstrategy.Policy(backoff=0.05))
    monkeypatch.setenv("BASE_URL", f"http://127.0.0.1:{silent_port}/MicroStrategyLibrary")
    monkeypatch.setenv("MSTR_CALL_TIMEOUT", "0.4")
    started = time.monotonic()
    assert microstrategy_to_s3.main(["-r", ALL_BONDS]) == 1
    assert time.monotonic() - started < 5
    line = error_line(caplog)
    assert line.startswith(
        f"microstrategy_to_s3 failed: {LABEL}: login as '{USERNAME}': no answer from 127.0.0.1:{silent_port} "
        "within 0.4 s (read time-out); gave up after "
    )
    previous()


def test_a_report_that_never_finishes_running_is_bounded_by_mstr_run_timeout(server, monkeypatch, previous, caplog):
    server.faults.append(Fault("instance", delay=30, times=None))
    monkeypatch.setenv("MSTR_RUN_TIMEOUT", "1")
    started = time.monotonic()
    assert microstrategy_to_s3.main(["-r", ALL_BONDS]) == 1
    assert time.monotonic() - started < 5
    assert error_line(caplog).startswith(
        f"microstrategy_to_s3 failed: {LABEL}: run of report {ALL_BONDS_ID}: no answer from 127.0.0.1:"
    )
    assert "(read time-out); the report may run 1 s in all (MSTR_RUN_TIMEOUT); gave up after 1 attempt" in caplog.text
    assert server.count("instance") == 1
    previous()


def test_a_page_that_never_comes_fails_after_the_call_timeout(server, monkeypatch, previous, caplog):
    server.faults.append(Fault("page", offset=10, delay=30, times=None))
    monkeypatch.setattr(microstrategy, "DEFAULT_POLICY", microstrategy.Policy(backoff=0.05))
    monkeypatch.setenv("MSTR_CALL_TIMEOUT", "0.3")
    started = time.monotonic()
    assert microstrategy_to_s3.main(["-r", ALL_BONDS, "--page-size", "5"]) == 1
    assert time.monotonic() - started < 5
    assert f"{LABEL}: page at offset 10: no answer from 127.0.0.1:" in error_line(caplog)
    previous()


@pytest.mark.parametrize("value", ["0", "-5", "soon", "inf"])
def test_bad_timeout_settings_are_configuration_errors(server, monkeypatch, caplog, value):
    monkeypatch.setenv("MSTR_RUN_TIMEOUT", value)
    assert microstrategy_to_s3.main(["-r", ALL_BONDS, "--output", "x.csv"]) == 2
    assert f"MSTR_RUN_TIMEOUT must be a positive number of seconds, not '{value}'" in error_line(caplog)
    assert server.calls == []


# --- clean stops (issue 13 item 3, issue 9 item 9) -------------------------------------------------


def start_export(args: list[str], tmpdir: Path, extra_env: dict[str, str] | None = None, code: str | None = None):
    """The export as a real process (its own signal handling), logging to a pipe we can read."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmpdir), **(extra_env or {})}
    command = [sys.executable, "-c", code, *args] if code else [sys.executable, "microstrategy_to_s3.py", *args]
    return subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


@pytest.mark.parametrize("to", ["bucket", "output"])
def test_sigterm_mid_download_is_a_clean_stop(server, env, tmp_path, previous, to):
    server.faults.append(Fault("page", offset=10, delay=30))  # the export is inside this page when stopped
    out = tmp_path / "out" / "report.csv"
    out.parent.mkdir()
    out.write_bytes(PREVIOUS)
    args = ["-r", ALL_BONDS, "--page-size", "5"] + (["--output", str(out)] if to == "output" else [])
    proc = start_export(args, env)
    wait_for(lambda: server.count("page") >= 2)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=30)
    assert time.monotonic() - started < 10
    assert proc.returncode == 143  # 128 + SIGTERM
    where = str(out) if to == "output" else f"s3://{os.environ['BUCKET']}/{KEY}"
    errors = [line for line in err.splitlines() if " ERROR " in line]
    assert len(errors) == 1, err
    assert re.search(
        rf"microstrategy_to_s3 stopped by SIGTERM before it finished: report '{ALL_BONDS}': nothing written "
        rf"after [\d.]+ s, {re.escape(where)} is unchanged, temporary files removed and any unfinished upload "
        r"aborted$",
        errors[0],
    ), errors[0]
    assert PASSWORD not in err
    previous()
    assert out.read_bytes() == PREVIOUS
    assert list(env.iterdir()) == []  # no temporary left in TMPDIR
    assert [p.name for p in out.parent.iterdir()] == ["report.csv"]  # nor beside --output
    wait_for(lambda: server.sessions == {}, timeout=5)  # logged out on the way out


def test_leftovers_of_a_killed_export_are_removed_at_the_next_start(server, env, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    server.faults.append(Fault("page", offset=10, delay=30))
    out = tmp_path / "out" / "report.csv"
    out.parent.mkdir()
    out.write_bytes(PREVIOUS)
    proc = start_export(["-r", ALL_BONDS, "--page-size", "5", "--output", str(out)], env)
    wait_for(lambda: server.count("page") >= 2)
    proc.kill()  # kill -9: no handler runs
    proc.communicate(timeout=30)
    leftovers = [p for p in out.parent.iterdir() if p.name != "report.csv"]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".report.csv.") and leftovers[0].suffix == ".tmp"
    old_form = out.parent / f".{ALL_BONDS}.k3j2h1g0.csv.tmp"  # what earlier versions left
    old_form.write_bytes(b"partial")
    assert out.read_bytes() == PREVIOUS
    server.faults.clear()
    assert microstrategy_to_s3.main(["-r", ALL_BONDS, "--output", str(out)]) == 0
    assert [p.name for p in out.parent.iterdir()] == ["report.csv"]
    assert out.read_bytes() != PREVIOUS
    assert caplog.text.count("left by an earlier run that was stopped") == 2


def test_sigterm_during_a_multipart_upload_aborts_it(env, tmp_path, s3_bucket, s3_endpoint, previous):
    """A 12 MB CSV goes up in 5 MB parts at 2 MB/s; SIGTERM once the upload runs: no incomplete
    multipart upload is left in the bucket and the previous object stays."""
    report = generated_report(ALL_BONDS_ID, 80_000)
    with MstrServer([report], username=USERNAME, password=PASSWORD, project_id=PROJECT_ID) as srv:
        code = (
            "import sys; from bond_reporting import storage; storage.MULTIPART_THRESHOLD = 5 << 20; "
            "storage.MAX_BANDWIDTH = 2 << 20; import microstrategy_to_s3; "
            "sys.exit(microstrategy_to_s3.main(sys.argv[1:]))"
        )
        proc = start_export(["-r", ALL_BONDS], env, {"BASE_URL": srv.base_url}, code=code)
        lines: list[str] = []
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if ": uploading 80000 rows to s3://" in line:
                break
        client = s3_client(s3_endpoint)
        wait_for(lambda: client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads"), timeout=20)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, "".join(lines) + err
    assert "any unfinished upload aborted" in err
    previous()
    assert list(env.iterdir()) == []


# --- settings validated, not guessed (issue 13 item 5) ---------------------------------------------


@pytest.mark.parametrize(
    ("bucket", "line"),
    [
        (
            "file://dir/sub",
            "BUCKET: a file URL must be file:///absolute/path (RFC 8089): 'dir' would be a host name; for a "
            "relative folder give the path itself (e.g. BUCKET=./reports)",
        ),
        ("file://", "BUCKET: a file URL must be file:///absolute/path (RFC 8089): the path is empty or relative"),
        (
            "s3://Bad_Bucket/x",
            "BUCKET: 'Bad_Bucket' is not an S3 bucket name in the s3:// URL; use s3://bucket or s3://bucket/prefix",
        ),
        ("s3://", "BUCKET: no bucket name after s3:// (a '/' missing?); use s3://bucket or s3://bucket/prefix"),
        ("s3://key:Secr3t-key@bucket", "BUCKET must not contain credentials (user:password@)"),
        ("gs://bucket", "BUCKET: unsupported scheme 'gs:'"),
        ("Not A Bucket", "BUCKET 'Not A Bucket' is not an S3 bucket name"),
    ],
)
def test_bad_bucket_settings_exit_2_in_one_line_before_any_call(server, monkeypatch, caplog, capfd, bucket, line):
    monkeypatch.setenv("BUCKET", bucket)
    assert microstrategy_to_s3.main(["-r", ALL_BONDS]) == 2
    error = error_line(caplog)
    assert line in error
    assert "Secr3t-key" not in error + caplog.text + "".join(capfd.readouterr())
    assert "regex" not in error
    assert server.calls == []


def test_a_missing_bucket_is_named_in_one_line_before_the_download(server, s3_bucket, monkeypatch, caplog):
    monkeypatch.setenv("BUCKET", "no-such-bucket-here")
    assert microstrategy_to_s3.main(["-r", ALL_BONDS]) == 2
    assert error_line(caplog) == (
        f"microstrategy_to_s3 failed: report '{ALL_BONDS}': BUCKET: there is no bucket 'no-such-bucket-here' "
        f"at {os.environ['AWS_ENDPOINT_URL']}"
    )
    assert server.calls == []


def test_file_url_and_s3_prefix_forms_work(server, s3_bucket, s3_endpoint, tmp_path, monkeypatch):
    folder = tmp_path / "the bucket"
    monkeypatch.setenv("BUCKET", "file://" + str(folder).replace(" ", "%20"))
    assert microstrategy_to_s3.main(["-r", ALL_BONDS]) == 0
    assert (folder / KEY).is_file()
    monkeypatch.setenv("BUCKET", f"s3://{s3_bucket}/exports/daily/")
    assert microstrategy_to_s3.main(["-r", ALL_BONDS]) == 0
    body = s3_client(s3_endpoint).get_object(Bucket=s3_bucket, Key=f"exports/daily/{KEY}")["Body"].read()
    assert body == (folder / KEY).read_bytes()


@pytest.mark.parametrize("name", ["BASE_URL", "AWS_ENDPOINT_URL"])
def test_credentials_inside_url_settings_are_refused_without_echo(server, monkeypatch, caplog, capfd, name):
    monkeypatch.setenv(name, "https://admin:Hunter2-secret@bi.example.org/MicroStrategyLibrary")
    assert microstrategy_to_s3.main(["-r", ALL_BONDS, "--output", "x.csv"]) == 2
    assert f"{name} must not contain credentials (user:password@host)" in error_line(caplog)
    assert "Hunter2-secret" not in caplog.text + "".join(capfd.readouterr())


# --- errors read cleanly and name the report (issue 9 item 7) --------------------------------------


def test_a_wrong_base_url_path_says_to_check_base_url(server, monkeypatch, previous, caplog):
    monkeypatch.setenv("BASE_URL", server.base_url.replace("MicroStrategyLibrary", "MicroStrategy"))
    assert microstrategy_to_s3.main(["-r", ALL_BONDS]) == 1
    line = error_line(caplog)
    assert line.startswith(f"microstrategy_to_s3 failed: {LABEL}: login as '{USERNAME}': HTTP 404 Not Found; ")
    assert line.endswith(
        "/MicroStrategy/api answered with an HTML page, not as the MicroStrategy REST API does: check BASE_URL "
        "(the Library URL, e.g. https://<host>/MicroStrategyLibrary)"
    )
    assert "<html" not in line
    previous()


def test_a_refused_connection_names_the_host_and_port(env, monkeypatch, previous, caplog):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    monkeypatch.setenv("BASE_URL", f"http://127.0.0.1:{port}/MicroStrategyLibrary")
    assert microstrategy_to_s3.main(["-r", ALL_BONDS]) == 1
    assert error_line(caplog).startswith(
        f"microstrategy_to_s3 failed: {LABEL}: login as '{USERNAME}': connection to 127.0.0.1:{port} refused "
        "(is BASE_URL right and the server up?); gave up after 3 attempts"
    )
    previous()


def test_a_bare_http_error_reads_as_status_and_reason(server, previous, caplog):
    server.faults.append(Fault("instance", status=403, bare=True))
    assert microstrategy_to_s3.main(["-r", ALL_BONDS]) == 1
    assert error_line(caplog) == (
        f"microstrategy_to_s3 failed: {LABEL}: run of report {ALL_BONDS_ID}: HTTP 403 Forbidden"
    )
    previous()


def test_output_file_gets_the_umask_mode(server, tmp_path):
    old = os.umask(0o027)
    try:
        out = tmp_path / "out.csv"
        assert microstrategy_to_s3.main(["-r", ALL_BONDS, "--output", str(out)]) == 0
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o640
