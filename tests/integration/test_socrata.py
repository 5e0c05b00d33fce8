"""Publishing: JSON rendering, the folder sink, and Socrata over HTTPS with faults (tests/soda_server.py)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import bond_calculations
from bond_reporting import calculations as calc
from bond_reporting import socrata
from bond_reporting.errors import ConfigError, PublishError, ValidationError
from config import datasets as cfg
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


def test_folder_sink_failure_is_one_publish_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(PublishError, match=r"vs3t-h2aj: cannot write.*; published: none; not published: vs3t-h2aj$"):
        socrata.publish_all(socrata.FolderSink(blocker / "out"), {"vs3t-h2aj": pd.DataFrame({"a": [1]})})


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
        "published: vs3t-h2aj; not published: jdna-s8qn, mri6-eexh"
    )
    assert soda.datasets["vs3t-h2aj"] == expected_rows(payloads["vs3t-h2aj"])
    assert methods(soda, "jdna-s8qn").count(("PUT", 200)) == 3  # first try + 2 restarts
    assert methods(soda, "mri6-eexh") == []
    for secret in SECRETS:
        assert secret not in message and secret not in caplog.text


def test_bad_credentials_fail_at_once_without_leaking_them(soda: SodaServer, sleeps: list[float]) -> None:
    frame = payloads_for(expenses_frame())["vs3t-h2aj"]
    publisher = make_publisher(soda, sleeps, key_secret="wrong-secret-3141")
    with pytest.raises(PublishError, match="vs3t-h2aj: PUT rows 1-7 of 30: HTTP 401") as info:
        socrata.publish_all(publisher, {"vs3t-h2aj": frame})
    assert len(soda.requests) == 1 and sleeps == []
    assert "(the dataset is unchanged)" in str(info.value)
    assert "wrong-secret-3141" not in str(info.value) and KEY_ID not in str(info.value)


def test_untrusted_certificate_is_refused(soda: SodaServer, sleeps: list[float]) -> None:
    publisher = make_publisher(soda, sleeps, verify=True)  # the system store does not know our test CA
    with pytest.raises(PublishError, match="TLS error"):
        publisher.publish("vs3t-h2aj", pd.DataFrame({"a": [1]}))
    assert soda.requests == []


def test_a_failing_calculation_publishes_nothing(soda: SodaServer, sleeps: list[float]) -> None:
    tables = {**empty_tables(), cfg.EXPENSES_2020: expenses_frame()}
    # The summaries (built after vs3t/jdna/rrww) cannot be computed: the current plan is empty.
    with pytest.raises(ValidationError, match="current_fy_spend_plan is empty"):
        bond_calculations.calculate_and_publish(tables, make_publisher(soda, sleeps))
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
