"""The Prefect flow end to end on tiny data, against the real services the other tests use.

A temporary local Prefect server (one per session), real PostgreSQL (``database_url``), a local
folder as the bucket, the project's MicroStrategy-protocol server on loopback serving the
generated report CSVs, and the sheets from a generated folder. The flow's seven payloads must
equal those of a direct run of the three scripts; a failing load must stop the flow before
anything is published.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest

import bond_calculations
import bond_data
import microstrategy_to_s3
from bond_reporting import logs, prefect_support
from bond_reporting.errors import ConfigError, MicroStrategyError, SourceError, ValidationError
from bond_reporting.settings import REQUIRED_BY
from config.datasets import DATASET_IDS
from flows import pipeline as flow_module
from scripts.demo import served_reports
from scripts.make_sample_data import generate_sample_data
from scripts.mstr_server import MstrServer
from tests.support.prefect_harness import PrefectApi

PROJECT_ID = "00112233445566778899AABBCCDDEEFF"
PASSWORD = "flow-test-password-5d1f"


@pytest.fixture(scope="module")
def tiny_sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All twelve sources, small: the two report CSVs (MicroStrategy headers) and ten sheets."""
    folder = tmp_path_factory.mktemp("sources")
    generate_sample_data(folder, groups=4, dates=12, fiscal_years=2, seed=7)
    return folder


@pytest.fixture
def mstr(tiny_sources: Path) -> Iterator[str]:
    """The MicroStrategy-protocol server serving the two generated reports; its base URL."""
    with MstrServer(
        served_reports(tiny_sources), username="flow-test", password=PASSWORD, project_id=PROJECT_ID
    ) as server:
        yield server.base_url


@pytest.fixture
def pipeline_env(
    prefect_api: PrefectApi,
    database_url: str,
    mstr: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    """Everything the three scripts need, in the environment; returns the bucket folder."""
    bucket = tmp_path / "bucket"
    for name, value in {
        "DATABASE_URL": database_url,
        "BUCKET": str(bucket),
        "BASE_URL": mstr,
        "PROJECT_ID": PROJECT_ID,
        "MSTRO_USERNAME": "flow-test",
        "MSTRO_PASSWORD": PASSWORD,
    }.items():
        monkeypatch.setenv(name, value)
    # Tests never wait minutes for a retry: keep the retry counts, drop the delays.
    monkeypatch.setattr(flow_module, "export_report", flow_module.export_report.with_options(retry_delay_seconds=0))
    monkeypatch.setattr(flow_module, "load_sources", flow_module.load_sources.with_options(retry_delay_seconds=0))
    return bucket


def read_payloads(folder: Path) -> dict[str, list[dict]]:
    """Every payload in ``folder``, ``updated_at`` removed (the load time differs by design)."""
    payloads = {}
    for path in sorted(folder.glob("*.json")):
        records = json.loads(path.read_text())
        payloads[path.stem] = [{k: v for k, v in r.items() if k != "updated_at"} for r in records]
    return payloads


def flow_run_records(flow_run_id: UUID) -> tuple[list, list, list]:
    """(task runs, logs, artifacts) of one flow run, read back from the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        records = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return task_runs, records, artifacts


def test_flow_publishes_what_a_direct_run_of_the_scripts_publishes(
    pipeline_env: Path, tiny_sources: Path, tmp_path: Path
) -> None:
    out_flow, out_direct = tmp_path / "out-flow", tmp_path / "out-direct"
    state = flow_module.bond_reporting(output_dir=str(out_flow), sheets_dir=str(tiny_sources), return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()

    # The same pipeline without Prefect, into a second bucket folder and output folder.
    for name in microstrategy_to_s3.REPORTS:
        direct = microstrategy_to_s3.run(name, output=str(tmp_path / "bucket-direct" / f"{name}.csv"))
        assert (tmp_path / "bucket-direct" / f"{name}.csv").read_bytes() == (pipeline_env / f"{name}.csv").read_bytes()
        assert direct["rows"] == next(e["rows"] for e in summary["exports"] if e["report"] == name)
    loaded = bond_data.run(sheets_dir=str(tiny_sources))
    published = bond_calculations.run(output_dir=str(out_direct))

    flow_payloads, direct_payloads = read_payloads(out_flow), read_payloads(out_direct)
    assert sorted(flow_payloads) == sorted(DATASET_IDS)
    assert flow_payloads == direct_payloads
    assert summary["load"]["tables"] == loaded["tables"]
    assert summary["publish"]["datasets"] == published["datasets"]
    assert summary["publish"]["data_as_of"] == published["data_as_of"]
    assert {len(records) for records in flow_payloads.values()} != {0}

    task_runs, records, artifacts = flow_run_records(state.state_details.flow_run_id)
    # Task runs are named after what they do.
    assert sorted(run.name for run in task_runs) == sorted(
        [*(f"export {name}" for name in microstrategy_to_s3.REPORTS), "load sources", "calculate and publish"]
    )
    assert all(run.state_type.value == "COMPLETED" for run in task_runs), [(r.name, r.state_type) for r in task_runs]

    # The scripts' own log lines are in the run log, attached to their task runs, redacted.
    script_lines = [r for r in records if r.name.split(".")[0] in prefect_support.SCRIPT_LOGGERS]
    assert any(r.name.startswith("bond_reporting.loader") and r.task_run_id for r in script_lines)
    assert {r.name.split(".")[0] for r in script_lines} >= {"bond_reporting"}
    assert all(PASSWORD not in r.message for r in records)

    (artifact,) = [a for a in artifacts if a.key == prefect_support.ARTIFACT_KEY]
    rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    as_dict = {(r["step"], r["item"]): r for r in rows}
    for name in microstrategy_to_s3.REPORTS:
        assert as_dict[("export", name)]["rows"] == next(e["rows"] for e in summary["exports"] if e["report"] == name)
    for table, count in loaded["tables"].items():
        assert as_dict[("load", table)]["rows"] == count
    for dataset, count in published["datasets"].items():
        assert as_dict[("publish", dataset)]["rows"] == count
    assert all(isinstance(as_dict[(step, item)]["seconds"], float) for step, item in as_dict if "(" in item)
    assert f"data as of {published['data_as_of']}" in artifact.description

    # The run report (issue 11): report.html beside the payloads, a link to it, its headline numbers.
    assert (out_flow / "report.html").is_file() and summary["publish"]["report"] == [str(out_flow / "report.html")]
    (link,) = [a for a in artifacts if a.key == prefect_support.REPORT_LINK_KEY]
    assert (out_flow / "report.html").resolve().as_uri() in str(link.data)
    (headline,) = [a for a in artifacts if a.key == prefect_support.HEADLINE_KEY]
    assert "| Rows published | " + f"{sum(published['datasets'].values()):,} |" in str(headline.data)
    page = (out_flow / "report.html").read_text()
    assert ">export</td>" in page and ">load</td>" in page  # the flow's steps are in the report's headline

    # Re-publishing only (after a failed or partial publish): no export, no load, the same payloads.
    again = tmp_path / "out-again"
    state = flow_module.bond_reporting(output_dir=str(again), publish_only=True, return_state=True)
    assert state.is_completed(), state.message
    task_runs, _records, _artifacts = flow_run_records(state.state_details.flow_run_id)
    assert [run.name for run in task_runs] == ["calculate and publish"]
    assert read_payloads(again) == flow_payloads


def test_flow_file_main_runs_the_pipeline_once(pipeline_env: Path, tiny_sources: Path, tmp_path: Path) -> None:
    """``python -m flows.pipeline ...`` (its ``main``): one run, exit codes 0 and 2."""
    out = tmp_path / "out"
    assert flow_module.main(["--output-dir", str(out), "--sheets-dir", str(tiny_sources)]) == 0
    assert {p.stem for p in out.glob("*.json")} == set(DATASET_IDS)
    assert flow_module.main(["--report", "No such report", "--output-dir", str(out)]) == 2


def test_demo_runs_the_whole_pipeline_offline(
    prefect_api: PrefectApi,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """What ``make demo`` runs, with its folders in tmp_path: embedded PostgreSQL, folder bucket,
    the MicroStrategy server on loopback, the seven payloads in out/."""
    from scripts import demo

    local, out = tmp_path / ".local", tmp_path / "out"
    # The demo rewrites os.environ: register every name it touches so the test restores them.
    for name in (*demo.demo_environment(local), "BASE_URL", "PROJECT_ID", "MSTRO_USERNAME", "MSTRO_PASSWORD"):
        monkeypatch.setenv(name, "placeholder")
    # A shell setting that would reach a real service is ignored by the demo.
    monkeypatch.setenv("DATABASE_URL", "postgresql://etl:shell-password@192.0.2.1:5432/prod")
    monkeypatch.chdir(tmp_path)

    assert demo.main(local=local, out=out) == 0

    printed = capsys.readouterr().out
    password = os.environ["MSTRO_PASSWORD"]
    assert sorted(p.stem for p in out.glob("*.json")) == sorted(DATASET_IDS)
    assert (local / "pgdata").is_dir()
    assert {p.name for p in (local / "bucket").iterdir()} == {f"{n}.csv" for n in microstrategy_to_s3.REPORTS}
    assert "flow 'bond-reporting' completed" in printed and "data as of" in printed
    # The odd-looking values are explained, each in one line pointing into docs/.
    explained = printed.split("Values that look odd and are meant to be (docs/data-contract.md):\n")[1].splitlines()
    assert explained[0].startswith("  department 2") and "(quirk Q7, §5.2)" in explained[0]
    assert any("in the future on purpose" in line and "§3.3" in line for line in explained)
    assert any(line.startswith("  S1, S2, G1") and "§3.1" in line for line in explained)
    assert password.startswith("demo-") and password not in printed
    assert f"run report     {out / 'report.html'}" in printed and (out / "report.html").is_file()


def test_failing_load_stops_the_flow_before_publishing(pipeline_env: Path, tiny_sources: Path, tmp_path: Path) -> None:
    sheets = tmp_path / "sheets"
    sheets.mkdir()
    for path in tiny_sources.glob("*.csv"):
        (sheets / path.name).write_bytes(path.read_bytes())
    bad = sheets / "bond_2020_baseline_spend.csv"
    lines = bad.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[1].split(",")
    cells[header.index("Date")] = "2024-13-45"  # not M/D/YYYY: a validation failure
    bad.write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    out = tmp_path / "out"

    state = flow_module.bond_reporting(output_dir=str(out), sheets_dir=str(sheets), return_state=True)

    assert state.is_failed()
    with pytest.raises(ValidationError, match="bond_2020_baseline_spend"):
        state.result()
    assert not out.exists() or not any(out.iterdir())
    task_runs, _records, artifacts = flow_run_records(state.state_details.flow_run_id)
    names = {run.name: run for run in task_runs}
    assert "calculate and publish" not in names
    load = names["load sources"]
    assert load.state_type.value == "FAILED"
    assert load.run_count == 1  # a validation failure is not retried
    (artifact,) = [a for a in artifacts if a.key == prefect_support.ARTIFACT_KEY]
    assert "FAILED at load" in artifact.description


def test_transient_export_failure_is_retried_and_a_config_error_is_not(
    prefect_api: PrefectApi,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Flow mechanics only: the script's run() is replaced by a fake that fails on demand."""
    for name in REQUIRED_BY["export"] + REQUIRED_BY["publish"]:
        monkeypatch.setenv(name, "set")
    calls: dict[str, int] = {}
    failures = {"2020 Bond Expenses Obligated": MicroStrategyError("HTTP 503 from /api/v2/reports (attempt)")}

    def fake_export(report_name: str, **_kwargs: object) -> dict:
        calls[report_name] = calls.get(report_name, 0) + 1
        if report_name in failures and calls[report_name] == 1:
            raise failures[report_name]
        return {"report": report_name, "rows": 3, "destination": "x", "seconds": 0.0}

    monkeypatch.setattr(microstrategy_to_s3, "run", fake_export)
    monkeypatch.setattr(flow_module, "export_report", flow_module.export_report.with_options(retry_delay_seconds=0))
    monkeypatch.setattr(
        flow_module, "load_sources", flow_module.load_sources.with_options(retries=0, retry_delay_seconds=0)
    )
    loads: list[int] = []

    def fake_load(**_kwargs: object) -> dict:
        loads.append(1)
        raise SourceError("stop here")

    monkeypatch.setattr(bond_data, "run", fake_load)

    state = flow_module.bond_reporting(return_state=True)
    assert state.is_failed()
    with pytest.raises(SourceError, match="stop here"):
        state.result()
    assert calls == {"2020 Bond Expenses Obligated": 2, "All bonds Expenses Obligated": 1}

    calls.clear()
    failures["All bonds Expenses Obligated"] = ConfigError("missing setting MSTRO_PASSWORD")
    failures.pop("2020 Bond Expenses Obligated")
    state = flow_module.bond_reporting(return_state=True)
    with pytest.raises(ConfigError, match="MSTRO_PASSWORD"):
        state.result()
    assert calls["All bonds Expenses Obligated"] == 1  # a configuration error is not retried
    assert calls["2020 Bond Expenses Obligated"] == 1  # the other export still ran to completion
    assert len(loads) == 1  # only the first run reached the load: a failed export stops the flow


def test_unknown_report_fails_before_anything_runs(prefect_api: PrefectApi) -> None:
    state = flow_module.bond_reporting(reports=["No such report"], return_state=True)
    with pytest.raises(ConfigError, match="unknown report"):
        state.result()
    task_runs, _records, _artifacts = flow_run_records(state.state_details.flow_run_id)
    assert task_runs == []


def test_script_log_lines_reach_the_run_log_redacted(prefect_api: PrefectApi) -> None:
    from prefect import flow, task

    secret = "log-secret-value-7c2e9a"
    logs.register_secret(secret)

    @task
    def noisy() -> None:
        logging.getLogger("bond_data").info("connecting with %s", secret)
        logging.getLogger("bond_reporting.database").warning("password=%s failed", secret)

    @flow
    def probe() -> None:
        prefect_support.route_script_logs()
        noisy()

    state = probe(return_state=True)
    _task_runs, records, _artifacts = flow_run_records(state.state_details.flow_run_id)
    lines = {r.name: r for r in records if r.name in ("bond_data", "bond_reporting.database")}
    assert lines["bond_data"].message.endswith("connecting with ***")
    assert lines["bond_data"].task_run_id is not None
    assert "password=*** failed" in lines["bond_reporting.database"].message
    assert all(secret not in r.message for r in records)
    # Routing twice attaches nothing twice: one record per line.
    assert sum(r.name == "bond_data" for r in records) == 1


def test_secret_block_completes_the_environment(
    prefect_api: PrefectApi,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.blocks.system import Secret

    Secret(value={"MSTRO_PASSWORD": "block-password-1234", "SO_WEB": "from-block"}).save(
        "flow-test-env", overwrite=True
    )
    monkeypatch.setenv("SO_WEB", "from-env")
    settings = prefect_support.load_settings("flow-test-env")
    assert settings.mstro_password == "block-password-1234"
    assert settings.so_web == "from-env"  # the environment wins
    assert logs.redact("x block-password-1234 y") == "x *** y"

    assert prefect_support.load_settings("no-such-block").mstro_password is None  # a warning, not a failure
    Secret(value={"MSTRO_PASWORD": "typo"}).save("flow-test-typo", overwrite=True)
    with pytest.raises(ConfigError, match="MSTRO_PASWORD"):
        prefect_support.load_settings("flow-test-typo")
    Secret(value="just a string").save("flow-test-string", overwrite=True)
    with pytest.raises(ConfigError, match="JSON object"):
        prefect_support.load_settings("flow-test-string")


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (ValidationError("x"), False),
        (ConfigError("x"), False),
        (SourceError("x"), True),
        (MicroStrategyError("MicroStrategy report instance: HTTP 500 ERR001: busy; gave up after 5 attempts"), True),
        (
            MicroStrategyError("MicroStrategy login as 'etl': HTTP 401 ERR003: wrong credentials", retryable=False),
            False,
        ),
        (MicroStrategyError("MicroStrategy report 'x': HTTP 404 ERR004: no such report", retryable=False), False),
        (SourceError("GET https://docs.google.com/x: HTTP 403 (Forbidden)", retryable=False), False),
        (SourceError("GET https://docs.google.com/x: ReadTimeout after 4 attempts"), True),
        (TimeoutError("x"), True),
    ],
)
def test_retry_condition(error: Exception, retried: bool) -> None:
    from prefect.states import Failed

    assert prefect_support.retry_unless_permanent(None, None, Failed(data=error)) is retried


def test_masking_a_secret_in_an_error_keeps_whether_it_may_be_retried() -> None:
    from bond_reporting import logs

    logs.register_secret("flow-secret-9f8e")

    def refused() -> dict:
        raise MicroStrategyError("login with flow-secret-9f8e refused", retryable=False)

    def transient() -> dict:
        raise MicroStrategyError("HTTP 503 with flow-secret-9f8e")

    state = prefect_support.run_step(refused)  # expected: a Failed state with its one line
    assert state.is_failed() and state.message == "login with *** refused"
    error = state.result(raise_on_failure=False)
    assert isinstance(error, MicroStrategyError) and error.retryable is False
    with pytest.raises(MicroStrategyError) as failure:  # transient: raised for Prefect's retries
        prefect_support.run_step(transient)
    assert str(failure.value) == "HTTP 503 with ***"
    assert failure.value.retryable is True


def test_an_expected_error_is_one_line_once_in_the_run_log(
    pipeline_env: Path, tiny_sources: Path, tmp_path: Path
) -> None:
    """A refused login (HTTP 401, not retryable): its one line appears once, as the failed export's
    state, with no traceback; the flow run fails with that line as its message; nothing is loaded."""
    os.environ["MSTRO_PASSWORD"] = "wrong-password-0042"  # pipeline_env's monkeypatch restores it
    logs.register_secret("wrong-password-0042")
    state = flow_module.bond_reporting(
        reports=["2020 Bond Expenses Obligated"], output_dir=str(tmp_path / "out"), return_state=True
    )
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, MicroStrategyError) and error.retryable is False
    assert state.message == str(error) and "\n" not in state.message and "401" in state.message

    task_runs, records, artifacts = flow_run_records(state.state_details.flow_run_id)
    (export,) = task_runs
    assert export.name == "export 2020 Bond Expenses Obligated" and export.run_count == 1  # not retried
    mentions = [r for r in records if str(error) in r.message]
    assert len(mentions) == 1 and mentions[0].level == logging.ERROR and mentions[0].task_run_id == export.id
    assert not any("Traceback" in r.message for r in records), [r.message for r in records]
    assert all("wrong-password-0042" not in r.message for r in records)
    (artifact,) = [a for a in artifacts if a.key == prefect_support.ARTIFACT_KEY]
    assert "FAILED at export" in artifact.description
    assert not (tmp_path / "out").exists()


def test_missing_settings_are_one_line_naming_all_of_them_before_any_task(
    prefect_api: PrefectApi, tmp_path: Path
) -> None:
    state = flow_module.bond_reporting(return_state=True)
    assert state.is_failed()
    for name in REQUIRED_BY["export"] + REQUIRED_BY["publish"]:
        assert f"missing setting {name}" in state.message
    task_runs, records, _artifacts = flow_run_records(state.state_details.flow_run_id)
    assert task_runs == []
    assert not any("Traceback" in r.message for r in records)
