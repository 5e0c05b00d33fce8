"""A flow run that cannot succeed for want of settings fails first, in one line, touching nothing.

The command line (``python -m flows.pipeline``) checks before Prefect is imported: no temporary
server, no ``~/.prefect``, exit 2 and the one line the scripts print. The flow itself (what a
deployment runs) makes the same check before any task. What is needed follows the parameters:
``--output-dir`` needs no Socrata settings, ``--publish-only`` no MicroStrategy ones, and without
the embedded PostgreSQL (the image has no pgserver) every run needs DATABASE_URL or PGHOST.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bond_reporting.errors import ConfigError
from bond_reporting.settings import REQUIRED_BY
from flows import pipeline as flow_module
from flows import preflight
from tests.flow.test_flow import flow_run_records
from tests.support import ROOT
from tests.support.prefect_harness import PrefectApi

EXPORT, PUBLISH = list(REQUIRED_BY["export"]), list(REQUIRED_BY["publish"])
# The command line as the image runs it, with pgserver absent as it is there.
WITHOUT_PGSERVER = (
    "import runpy, sys; sys.modules['pgserver'] = None; sys.argv[0] = 'flows/pipeline.py'; "
    "runpy.run_module('flows.pipeline', run_name='__main__', alter_sys=True)"
)


def tree(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def run_cli(tmp_path: Path, args: list[str], *, pgserver: bool = True, **env: str) -> subprocess.CompletedProcess:
    """``python -m flows.pipeline ARGS`` in an empty folder, with an empty HOME and no settings
    (no ETL variable, no .env, no Prefect server)."""
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir(exist_ok=True)
    home.mkdir(exist_ok=True)
    command = ["-m", "flows.pipeline"] if pgserver else ["-c", WITHOUT_PGSERVER]
    return subprocess.run(
        [sys.executable, *command, *args],
        cwd=work,
        env={"PATH": "/usr/bin:/bin", "HOME": str(home), "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def named(line: str) -> list[str]:
    """The variables a ``missing setting NAME: ...`` line names, in order."""
    return re.findall(r"missing setting (\w+):", line)


@pytest.mark.parametrize(
    ("args", "pgserver", "names"),
    [
        ([], True, EXPORT + PUBLISH),
        (["--output-dir", "out"], True, EXPORT),
        (["--publish-only"], True, PUBLISH),
        (["--publish-only", "--output-dir", "out"], False, ["DATABASE_URL"]),
        ([], False, [*EXPORT, *PUBLISH, "DATABASE_URL"]),
    ],
)
def test_the_command_line_names_every_missing_setting_before_starting_anything(
    tmp_path: Path, args: list[str], pgserver: bool, names: list[str]
) -> None:
    result = run_cli(tmp_path, args, pgserver=pgserver)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and result.stdout == "", result.stderr
    _time, _, message = lines[0].partition(" ERROR bond_reporting: ")
    assert message.startswith("bond-reporting failed: missing setting "), lines[0]
    assert named(message) == names
    assert message.endswith("(see .env.example)")
    # Nothing started, nothing written: no Prefect home, no output folder, no embedded database.
    assert tree(tmp_path) == ["home", "work"]


def test_a_so_web_url_is_refused_by_the_command_line_with_what_to_put(tmp_path: Path) -> None:
    result = run_cli(
        tmp_path,
        ["--publish-only"],
        SO_WEB="https://data.austintexas.gov/some/path?x=1",
        SO_KEY="k",
        SO_SECRET="s",
    )
    assert result.returncode == 2
    assert [line.partition(" ERROR bond_reporting: ")[2] for line in result.stderr.splitlines()] == [
        "bond-reporting failed: SO_WEB must be the Socrata domain only, without a path, query or fragment: "
        "put SO_WEB=data.austintexas.gov"
    ]
    assert tree(tmp_path) == ["home", "work"]


def test_help_and_bad_arguments_are_the_full_command_lines(tmp_path: Path) -> None:
    shown = run_cli(tmp_path, ["--help"])
    assert shown.returncode == 0 and shown.stdout.count("usage:") == 1
    assert "2020 Bond Expenses Obligated" in " ".join(shown.stdout.split())  # the full parser: report names
    bad = run_cli(tmp_path, ["--no-such-option"])
    assert bad.returncode == 2 and "unrecognized arguments: --no-such-option" in bad.stderr


@pytest.mark.parametrize(
    ("reports", "publish_only", "output_dir", "steps"),
    [
        (None, False, None, ("export", "load", "calculate", "publish")),
        ([], False, "out", ("load", "calculate")),
        (["x"], True, None, ("calculate", "publish")),
    ],
)
def test_steps_follow_the_parameters(
    reports: list[str] | None, publish_only: bool, output_dir: str | None, steps: tuple[str, ...]
) -> None:
    assert preflight.steps(reports, publish_only=publish_only, output_dir=output_dir) == steps


# --- the flow itself, as a deployment runs it ---------------------------------------------------------


def test_the_flow_with_an_output_dir_needs_no_socrata_settings(prefect_api: PrefectApi, tmp_path: Path) -> None:
    out = tmp_path / "out"
    state = flow_module.bond_reporting(output_dir=str(out), return_state=True)
    assert state.is_failed()
    with pytest.raises(ConfigError):
        state.result()
    assert named(state.message) == EXPORT
    assert not out.exists()


def test_the_flow_without_a_database_fails_before_exporting(
    prefect_api: PrefectApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the image (no pgserver) a run without DATABASE_URL/PGHOST would export for minutes and then
    fail at the load: it fails before any task instead."""
    monkeypatch.setitem(sys.modules, "pgserver", None)
    for name in EXPORT + PUBLISH:
        monkeypatch.setenv(name, "set")
    monkeypatch.setenv("SO_WEB", "data.example.org")
    state = flow_module.bond_reporting(return_state=True)
    assert state.is_failed()
    assert named(state.message) == ["DATABASE_URL"]
    task_runs, _records, _artifacts = flow_run_records(state.state_details.flow_run_id)
    assert task_runs == []
    assert not (tmp_path / "local").exists()  # BOND_LOCAL_DIR: no embedded database was started
