"""Operating the deployment, against the test Prefect server: ``make deploy`` from nothing (the
work pool is created when missing), ``make alerts`` (two automations of the right shape, applied
idempotently), and ``check-config --secrets-block`` (a misspelt key in the block is found before
the 07:00 run)."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

from bond_reporting.deployment import STALE_AFTER, deployment_specs
from tests.support import ROOT
from tests.support.prefect_harness import PrefectApi

PYTHON = sys.executable


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_deploy_creates_the_missing_work_pool_and_alerts_are_applied(prefect_api: PrefectApi) -> None:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client

    env = prefect_api.cli_env()
    (spec,) = deployment_specs()
    pool = spec["work_pool"]["name"]
    run(["-m", "prefect", "work-pool", "delete", pool], env)  # as on a fresh server

    deployed = run(["-m", "bond_reporting.deployment", "deploy"], env)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert f"created work pool {pool!r}" in deployed.stderr
    with get_client(sync_client=True) as client:
        assert client.read_work_pool(pool).type == "docker"
        deployment = client.read_deployment_by_name(f"bond-reporting/{spec['name']}")

    # No notification block yet: one line, exit 2.
    missing = run(["-m", "bond_reporting.deployment", "alerts", "--block", "custom-webhook/no-such-block"], env)
    assert missing.returncode == 2
    lines = [line for line in missing.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, missing.stderr
    (line,) = lines
    assert "deployment alerts failed: no notification block 'custom-webhook/no-such-block'" in line

    # A webhook on loopback that nothing listens to: the automations are only created, never fired.
    block = CustomWebhookNotificationBlock(name="bond alerts", url="http://127.0.0.1:9/alert", allow_private_urls=True)
    block.save("bond-alerts-test", overwrite=True)
    block_id = CustomWebhookNotificationBlock.load("bond-alerts-test")._block_document_id
    for _ in range(2):  # applying twice updates, never duplicates
        applied = run(["-m", "bond_reporting.deployment", "alerts", "--block", "custom-webhook/bond-alerts-test"], env)
        assert applied.returncode == 0, applied.stdout + applied.stderr

    related = {"prefect.resource.id": f"prefect.deployment.{deployment.id}", "prefect.resource.role": "deployment"}
    with get_client(sync_client=True) as client:
        failed = client.read_automations_by_name(f"{spec['name']}: run failed or crashed")
        stale = client.read_automations_by_name(f"{spec['name']}: no completed run for 26 hours")
    assert len(failed) == 1 and len(stale) == 1
    (failed,), (stale,) = failed, stale
    assert failed.enabled and stale.enabled
    assert failed.trigger.posture.value == "Reactive"
    assert set(failed.trigger.expect) == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
    assert stale.trigger.posture.value == "Proactive"
    assert set(stale.trigger.expect) == {"prefect.flow-run.Completed"}
    assert stale.trigger.within == STALE_AFTER == timedelta(hours=26) and stale.trigger.threshold == 1
    for automation in (failed, stale):
        assert automation.trigger.match.model_dump() == {"prefect.resource.id": "prefect.flow-run.*"}
        assert automation.trigger.match_related.model_dump() == related
        (action,) = automation.actions
        assert action.type == "send-notification" and action.block_document_id == block_id
    assert "{{ flow_run.state.message }}" in failed.actions[0].body


def test_check_config_reads_the_secret_block(prefect_api: PrefectApi) -> None:
    """The deployment's Secret block, checked before the scheduled run: a misspelt key is named."""
    from prefect.blocks.system import Secret

    Secret(value={"MSTRO_PASWORD": "block-secret-9931", "SO_WEB": "data.example.gov"}).save(
        "check-config-typo", overwrite=True
    )
    env = {**prefect_api.cli_env(), "BOND_ENV_FILE": ""}
    result = run(["-m", "bond_reporting.check_config", "--secrets-block", "check-config-typo"], env)
    assert result.returncode == 2
    lines = result.stdout.splitlines()
    assert (
        "FAIL  variable MSTRO_PASWORD: set in Secret block 'check-config-typo' but not read by anything; "
        "did you mean MSTRO_PASSWORD?"
    ) in lines
    assert "ok    SO_WEB: https://data.example.gov" in lines
    assert "block-secret-9931" not in result.stdout + result.stderr

    result = run(["-m", "bond_reporting.check_config", "--secrets-block", "no-such-block"], env)
    assert result.returncode == 2
    assert "FAIL  Secret block 'no-such-block': there is no Secret block 'no-such-block' on this Prefect server" in (
        result.stdout.splitlines()
    )
