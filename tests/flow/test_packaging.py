"""The Docker image, the GitHub workflows and the Prefect deployment, checked without Docker or GitHub.

- hadolint and the GitHub-workflow JSON schema run on the real files (and fail on a bad one);
- the image's file set (Dockerfile COPY lines minus .dockerignore) is rebuilt in a temporary
  folder and smoke-run there exactly as the image workflow runs the image;
- prefect.yaml is deployed with the real ``prefect`` CLI to a temporary local Prefect server and
  read back: schedule, work pool, image, pull step, and no secret value anywhere.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import ROOT
from tests.support.prefect_harness import PrefectApi

VENV_BIN = Path(sys.executable).parent
APP_DIR = "/app/atd-bond-reporting"
SCRIPTS = ("microstrategy_to_s3.py", "bond_data.py", "bond_calculations.py")


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kwargs)


# --- Dockerfile -----------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    joined = text.replace("\\\n", " ").splitlines()
    lines = [line for line in joined if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in lines]


def test_dockerfile_passes_hadolint() -> None:
    result = run([str(VENV_BIN / "hadolint"), "--failure-threshold", "warning", "Dockerfile"], cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_a_bad_dockerfile(tmp_path: Path) -> None:
    # The check above can fail: an unpinned base and a cached pip install are warnings.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    result = run([str(VENV_BIN / "hadolint"), "--failure-threshold", "warning", str(bad)])
    assert result.returncode != 0
    assert "DL3042" in result.stdout and "DL3007" in result.stdout


def test_dockerfile_contract() -> None:
    instructions = dockerfile_instructions()
    froms = [args for op, args in instructions if op == "FROM"]
    assert len(froms) == 1 and re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+", froms[0]), froms
    runs = [args.split() for op, args in instructions if op == "RUN"]
    # Installs exactly the hashed lock (reproducible builds), whatever the rest of the command line.
    assert any({"--require-hashes", "requirements.lock"} <= set(words) for words in runs), runs
    assert ("WORKDIR", APP_DIR) in instructions
    users = [args for op, args in instructions if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    # The user switch comes after every install step: the code stays root-owned and read-only.
    last_run = max(i for i, (op, _) in enumerate(instructions) if op == "RUN")
    assert max(i for i, (op, _) in enumerate(instructions) if op == "USER") > last_run
    copied = " ".join(args for op, args in instructions if op in ("COPY", "ADD"))
    assert ".env" not in copied and "ADD" not in {op for op, _ in instructions}
    ignored = (ROOT / ".dockerignore").read_text().split()
    for pattern in (".git", ".venv", ".local", "out", ".env", ".env.*", "tests"):
        assert pattern in ignored, pattern


def image_file_set() -> list[Path]:
    """The files the Dockerfile's COPY lines put into the image, .dockerignore applied."""
    patterns = [
        p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")
    ]

    def ignored(rel: str) -> bool:
        parts = rel.split("/")
        return any(
            fnmatch.fnmatch(rel, p)
            or fnmatch.fnmatch(parts[-1], p.removeprefix("**/"))
            or any(fnmatch.fnmatch("/".join(parts[: i + 1]), p) for i in range(len(parts)))
            for p in patterns
        )

    files: list[Path] = []
    for op, args in dockerfile_instructions():
        if op != "COPY":
            continue
        sources = [s for s in args.split()[:-1] if not s.startswith("--")]
        for source in sources:
            path = ROOT / source
            assert path.exists(), f"Dockerfile copies {source}, which does not exist"
            candidates = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            files += [p for p in candidates if not ignored(p.relative_to(ROOT).as_posix())]
    return files


def test_image_file_set_smoke_runs(tmp_path: Path) -> None:
    """What the image workflow runs in the freshly built image, run on the image's files only."""
    app = tmp_path / "app"
    for path in image_file_set():
        target = app / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    names = {p.relative_to(app).as_posix() for p in app.rglob("*") if p.is_file()}
    assert not any(n.startswith(("tests/", ".env", ".local/", "out/")) or "__pycache__" in n for n in names), names
    env = {"PATH": str(VENV_BIN), "HOME": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    for script in SCRIPTS:
        result = run([str(VENV_BIN / "python"), script, "--help"], cwd=app, env=env)
        assert result.returncode == 0, f"{script} --help: {result.stderr}"
        assert "usage:" in result.stdout
    result = run([str(VENV_BIN / "python"), "-c", "import flows.pipeline"], cwd=app, env=env)
    assert result.returncode == 0, result.stderr


# --- GitHub workflows -----------------------------------------------------------------------------


def workflow(name: str) -> dict:
    data = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def test_workflows_pass_schema() -> None:
    files = sorted(str(p) for p in (ROOT / ".github" / "workflows").glob("*.yml"))
    assert {"test.yml", "image.yml"} <= {Path(f).name for f in files}
    result = run([str(VENV_BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *files])
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_fails_a_bad_workflow(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("name: bad\non: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n      - uses: 3\n")
    result = run([str(VENV_BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(bad)])
    assert result.returncode != 0


def all_steps(data: dict) -> list[dict]:
    return [step for job in data["jobs"].values() for step in job.get("steps", [])]


def test_workflow_actions_are_pinned() -> None:
    for name in ("test.yml", "image.yml"):
        for step in all_steps(workflow(name)):
            if "uses" in step:
                assert re.fullmatch(r"[\w-]+/[\w-]+@(v\d+\.\d+\.\d+|[0-9a-f]{40})", step["uses"]), step["uses"]


def test_test_workflow_runs_the_readme_command() -> None:
    data = workflow("test.yml")
    assert {"push", "pull_request"} <= set(data["on"])
    job = data["jobs"]["test"]
    assert job["runs-on"].startswith("ubuntu")
    python = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python@"))
    assert str(python["with"]["python-version"]) == "3.11"
    assert any(s.get("run", "").strip() == "make test" for s in job["steps"])
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_image_workflow_smoke_runs_before_pushing() -> None:
    data = workflow("image.yml")
    assert data["on"]["push"]["branches"] == ["main"]
    steps = all_steps(data)
    uses = [s.get("uses", "") for s in steps]
    assert any(u.startswith("docker/setup-qemu-action@") for u in uses)
    assert any(u.startswith("docker/setup-buildx-action@") for u in uses)
    builds = [i for i, s in enumerate(steps) if s.get("uses", "").startswith("docker/build-push-action@")]
    local, pushed = steps[builds[0]]["with"], steps[builds[-1]]["with"]
    assert local["load"] is True and local["platforms"] == "linux/amd64" and not local.get("push")
    assert pushed["push"] is True and set(pushed["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    # `production` (what the deployment runs), `latest`, and the commit's SHA (what a rollback pins).
    assert {t.rsplit(":", 1)[1] for t in pushed["tags"].splitlines()} == {"production", "latest", "${{ github.sha }}"}
    smoke = next(i for i, s in enumerate(steps) if "docker run --rm" in s.get("run", ""))
    login = next(i for i, s in enumerate(steps) if s.get("uses", "").startswith("docker/login-action@"))
    assert builds[0] < smoke < builds[-1] and login < builds[-1]  # smoke-tested, logged in, then pushed
    script = steps[smoke]["run"]
    assert all(name in script for name in SCRIPTS) and "--help" in script
    assert "import flows.pipeline" in script
    assert steps[login]["with"] == {
        "username": "${{ secrets.DOCKER_USERNAME }}",
        "password": "${{ secrets.DOCKER_TOKEN }}",
    }
    # The image is built only after the test suite passed on the same commit.
    assert data["jobs"]["image"]["needs"] == "test"
    assert data["jobs"]["test"]["uses"] == "./.github/workflows/test.yml"


# --- Prefect deployment ---------------------------------------------------------------------------

FAKE_SECRETS = {
    "MSTRO_PASSWORD": "fake-mstr-password-81723",
    "AWS_ACCESS_ID": "FAKEACCESSID99812",
    "AWS_PASS": "fake-aws-secret-55521",
    "SO_TOKEN": "fake-socrata-token-4411",
    "SO_KEY": "fake-socrata-key-7720",
    "SO_SECRET": "fake-socrata-secret-9931",
    "DATABASE_URL": "postgresql://etl:fake-db-password-3312@db.example:5432/bonds",
}


def test_deployment_round_trips_without_secrets(prefect_api: PrefectApi, tmp_path: Path) -> None:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    (deployment_spec,) = spec["deployments"]
    pool = deployment_spec["work_pool"]["name"]
    env = prefect_api.cli_env(**FAKE_SECRETS)
    prefect = str(VENV_BIN / "prefect")
    created = run([prefect, "work-pool", "create", pool, "--type", "docker", "--overwrite"], cwd=ROOT, env=env)
    assert created.returncode == 0, created.stdout + created.stderr
    deployed = run([prefect, "--no-prompt", "deploy", "--all"], cwd=ROOT, env=env)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(f"bond-reporting/{deployment_spec['name']}")
        work_pool = client.read_work_pool(pool)
    assert deployment.entrypoint == "flows.pipeline:bond_reporting"
    assert deployment.work_pool_name == pool
    assert deployment.job_variables["image"] == "atddocker/atd-bond-reporting:production"
    assert deployment.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": APP_DIR}}]
    (schedule,) = deployment.schedules
    assert schedule.active
    assert schedule.schedule.cron == "0 7 * * *"
    assert schedule.schedule.timezone == "America/Chicago"
    assert deployment.parameters == {"secrets_block": "bond-reporting-env"}
    assert set(deployment.parameter_openapi_schema["properties"]) == {
        "reports",
        "output_dir",
        "sheets_dir",
        "secrets_block",
        "publish_only",
        "accept_changes",
    }
    dumped = deployment.model_dump_json() + work_pool.model_dump_json() + deployed.stdout + deployed.stderr
    for name, value in FAKE_SECRETS.items():
        assert value not in dumped, f"{name} leaked into the deployment"
        assert name not in json.dumps(deployment.job_variables)


@pytest.mark.parametrize("entrypoint", ["flows.pipeline:bond_reporting", "flows/pipeline.py:bond_reporting"])
def test_flow_loads_from_entrypoint_in_a_fresh_process(entrypoint: str, tmp_path: Path) -> None:
    """Module form (the deployment's) and path form both load the flow, and the
    `bond_reporting` package is the package (nothing shadows it)."""
    code = (
        "import sys; from prefect.flows import load_flow_from_entrypoint; "
        f"f = load_flow_from_entrypoint({entrypoint!r}, use_placeholder_flow=False); "
        "import bond_reporting.settings; print(f.name, sys.modules['bond_reporting'].__file__)"
    )
    result = run([str(VENV_BIN / "python"), "-c", code], cwd=ROOT, env=PrefectApi("", tmp_path).cli_env())
    assert result.returncode == 0, result.stderr
    name, package_file = result.stdout.split()
    assert name == "bond-reporting"
    assert Path(package_file) == ROOT / "bond_reporting" / "__init__.py"


def test_flow_module_runs_from_the_command_line(tmp_path: Path) -> None:
    env = PrefectApi("", tmp_path).cli_env()
    result = run([str(VENV_BIN / "python"), "-m", "flows.pipeline", "--help"], cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr
    assert "--output-dir" in result.stdout and "--report" in result.stdout
    assert "``" not in result.stdout  # plain text, no reST markup
    assert "Exit codes" in result.stdout


def test_image_sets_the_flow_processes_prefect_defaults() -> None:
    """The image's ENV carries bond_reporting/prefect_env.py's Prefect settings (analytics off,
    the scripts' loggers routed to the run log) and runs the flow module by default."""
    from bond_reporting.prefect_env import PREFECT_DEFAULTS

    env = " ".join(args for op, args in dockerfile_instructions() if op == "ENV")
    for name, value in PREFECT_DEFAULTS.items():
        assert f"{name}={value}" in env.split(), name
    assert ("CMD", '["python", "-m", "flows.pipeline"]') in dockerfile_instructions()


# --- the lock ---------------------------------------------------------------------------------------


def lock_pins(text: str) -> dict[str, tuple[str, int]]:
    """Package (normalised name) -> (version, number of hashes) of a ``uv pip compile`` lock."""
    pins: dict[str, tuple[str, int]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = re.match(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^\s;\\]+)", block)
        if match:
            pins[re.sub(r"[-_.]+", "-", match.group(1).lower())] = (match.group(2), block.count("--hash=sha256:"))
    return pins


def test_lock_pins_every_requirement_at_its_version_with_hashes() -> None:
    """requirements.txt (the human list) and requirements.lock (what the image installs) agree;
    every locked package has hashes. `make lock-check` re-resolves the whole lock."""
    pins = lock_pins((ROOT / "requirements.lock").read_text())
    assert (ROOT / "requirements.lock").read_text().splitlines()[1].strip() == "#    make lock"
    wanted = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)", line).groups()
            wanted[re.sub(r"[-_.]+", "-", name.lower())] = version
    for name, version in wanted.items():
        assert name in pins, f"{name} is in requirements.txt but not in requirements.lock: run make lock"
        assert pins[name][0] == version, f"{name}: requirements.txt {version}, lock {pins[name][0]}: run make lock"
    assert all(hashes > 0 for _version, hashes in pins.values())
    assert len(pins) > len(wanted)  # the transitive dependencies are pinned too


def test_lock_parser_sees_a_stale_pin() -> None:
    stale = "pandas==3.0.0 \\\n    --hash=sha256:00\n    # via -r requirements.txt\n"
    assert lock_pins(stale) == {"pandas": ("3.0.0", 1)}


def test_requires_python_is_checked_before_the_venv_is_made(tmp_path: Path) -> None:
    """scripts/check_python.py (the Makefile's first step) refuses a Python outside requires-python."""
    spec = re.search(r'requires-python = "([^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    ok = run([str(VENV_BIN / "python"), "scripts/check_python.py"], cwd=ROOT)
    assert ok.returncode == 0 and ok.stderr == ""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import check_python
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    assert check_python.satisfies((3, 11, 7), spec)
    assert not check_python.satisfies((3, 10, 13), spec)
    assert not check_python.satisfies((3, 12, 0), spec)
    assert f"FROM python:{'.'.join(map(str, sys.version_info[:2]))}" in (ROOT / "Dockerfile").read_text()
