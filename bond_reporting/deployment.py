"""Deploying the flow and its alerts, as code: ``make deploy`` and ``make alerts``.

``python -m bond_reporting.deployment deploy [--image IMAGE]``
    creates every work pool ``prefect.yaml`` names that the Prefect server lacks (type from the
    file, default ``docker``), then runs ``prefect --no-prompt deploy --all``: a fresh server no
    longer fails with "work pool not found". ``--image`` deploys another image (a rollback).
``python -m bond_reporting.deployment alerts --block TYPE/NAME``
    creates or updates (idempotent, by name) two automations on the deployment, each sending
    through the notification block ``TYPE/NAME`` (e.g. ``slack-webhook/bond-reporting-alerts``;
    ``make alerts ALERT_BLOCK=...``):

    - "<deployment>: run failed or crashed": every Failed or Crashed flow run of the deployment,
      with the run's state message (the failing step's one line) and a link to it;
    - "<deployment>: no completed run for 26 hours": proactive, when no flow run of the deployment
      has Completed within 26 hours — the dashboard is going stale even if nothing "failed".

Both need ``PREFECT_API_URL`` (and ``PREFECT_API_KEY`` for Prefect Cloud). Exit codes: 0 done,
1 the server refused, 2 usage or configuration (no such block, no such deployment).
Operations: docs/operations.md.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml
from prefect.automations import Automation
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.exceptions import ObjectNotFound

from bond_reporting import logs
from bond_reporting.cli import run_main
from bond_reporting.errors import ConfigError, EtlError

ROOT = Path(__file__).resolve().parents[1]
PREFECT_YAML = ROOT / "prefect.yaml"
STALE_AFTER = timedelta(hours=26)  # daily at 07:00 plus two hours' grace

log = logging.getLogger("bond_reporting.deployment")

FAILED_BODY = (
    "Flow run {{ flow_run.name }} of {{ deployment.name }} is {{ flow_run.state.name }}: "
    "{{ flow_run.state.message }}\n{{ flow_run|ui_url }}\n"
    "Runbook: docs/operations.md (what is live after a failed export, load or publish)."
)
STALE_BODY = (
    "No run of the bond-reporting deployment has completed for 26 hours: the dashboard's data is going "
    "stale. Check the deployment's recent runs, the work pool's worker and docs/operations.md (freshness)."
)


def deployment_specs(path: Path = PREFECT_YAML) -> list[dict[str, Any]]:
    """The ``deployments`` of ``prefect.yaml``."""
    return yaml.safe_load(path.read_text())["deployments"]


def ensure_work_pools(specs: list[dict[str, Any]]) -> list[str]:
    """Create every work pool the deployments name that the server lacks; the names created."""
    created = []
    with get_client(sync_client=True) as client:
        for spec in specs:
            pool = spec["work_pool"]
            try:
                client.read_work_pool(pool["name"])
            except ObjectNotFound:
                kind = pool.get("type", "docker")
                # The CLI knows each pool type's default job template; use it rather than copy it.
                _prefect("work-pool", "create", pool["name"], "--type", kind)
                log.info("created work pool %r (type %s)", pool["name"], kind)
                created.append(pool["name"])
    return created


def deploy(image: str | None = None) -> None:
    """Work pools first, then ``prefect deploy --all`` from the project folder; ``image`` replaces
    the image of ``prefect.yaml`` (a rollback pins ``atddocker/atd-bond-reporting:<git sha>``)."""
    ensure_work_pools(deployment_specs())
    _prefect("--no-prompt", "deploy", "--all", *(("--job-variable", f"image={image}") if image else ()))


def _prefect(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "prefect", *args], cwd=ROOT, capture_output=True, text=True)
    if result.returncode:
        tail = " ".join(result.stdout.split()[-40:] + result.stderr.split()[-40:])
        raise EtlError(f"prefect {' '.join(args)} failed: {logs.redact(tail)}")
    for line in result.stdout.splitlines():
        if line.strip():
            log.info("%s", line.rstrip())


def alert_automations(deployment_id: UUID, deployment_name: str, block_document_id: UUID) -> list[Automation]:
    """The two automations of the deployment (not yet saved)."""
    related = {"prefect.resource.id": f"prefect.deployment.{deployment_id}", "prefect.resource.role": "deployment"}
    runs = {"prefect.resource.id": "prefect.flow-run.*"}
    owner = f"prefect.deployment.{deployment_id}"
    return [
        Automation(
            name=f"{deployment_name}: run failed or crashed",
            description="Notify on every Failed or Crashed run of the deployment (bond_reporting/deployment.py).",
            owner_resource=owner,
            trigger=EventTrigger(
                match=runs,
                match_related=related,
                expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
                posture=Posture.Reactive,
                threshold=1,
                within=timedelta(0),
            ),
            actions=[
                SendNotification(
                    block_document_id=block_document_id,
                    subject=f"{deployment_name}: run {{{{ flow_run.name }}}} {{{{ flow_run.state.name }}}}",
                    body=FAILED_BODY,
                )
            ],
        ),
        Automation(
            name=f"{deployment_name}: no completed run for 26 hours",
            description="Proactive: no Completed run of the deployment within 26 hours (bond_reporting/deployment.py).",
            owner_resource=owner,
            trigger=EventTrigger(
                match=runs,
                match_related=related,
                expect={"prefect.flow-run.Completed"},
                posture=Posture.Proactive,
                threshold=1,
                within=STALE_AFTER,
            ),
            actions=[
                SendNotification(
                    block_document_id=block_document_id,
                    subject=f"{deployment_name}: no completed run for 26 hours",
                    body=STALE_BODY,
                )
            ],
        ),
    ]


def apply_alerts(block: str, deployment: str | None = None) -> list[Automation]:
    """Create or update the alert automations of ``deployment`` ("flow/deployment", default the
    one in prefect.yaml) sending through the notification block ``block`` ("type-slug/name")."""
    if "/" not in block:
        raise ConfigError(f"alert block {block!r}: give it as TYPE/NAME, e.g. slack-webhook/{block}")
    try:
        block_id = Block.load(block, _sync=True)._block_document_id
    except (ValueError, KeyError):
        raise ConfigError(f"no notification block {block!r} on this Prefect server") from None
    if deployment is None:
        flow = "bond-reporting"  # flows/pipeline.py's FLOW_NAME
        deployment = f"{flow}/{deployment_specs()[0]['name']}"
    with get_client(sync_client=True) as client:
        try:
            found = client.read_deployment_by_name(deployment)
        except ObjectNotFound:
            raise ConfigError(f"no deployment {deployment!r} on this Prefect server: run `make deploy` first") from None
    applied = []
    for automation in alert_automations(found.id, deployment.split("/")[-1], block_id):
        with get_client(sync_client=True) as client:
            existing = client.read_automations_by_name(automation.name)
        if existing:
            automation.id = existing[0].id
            automation.update()
            for extra in existing[1:]:  # never two copies of one alert
                with get_client(sync_client=True) as client:
                    client.delete_automation(extra.id)
            log.info("updated automation %r", automation.name)
        else:
            automation = automation.create()
            log.info("created automation %r", automation.name)
        applied.append(automation)
    return applied


def main(argv: list[str] | None = None) -> int:
    """``python -m bond_reporting.deployment deploy|alerts --block TYPE/NAME``; exit 0, 1 or 2."""
    parser = argparse.ArgumentParser(
        prog="python -m bond_reporting.deployment",
        description="Deploy the flow (creating missing work pools) or apply its alert automations.",
        epilog="Needs PREFECT_API_URL. Exit codes: 0 done, 1 the server refused, 2 usage or configuration.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    deploy_command = commands.add_parser("deploy", help="create missing work pools, then prefect deploy --all")
    deploy_command.add_argument("--image", help="another image, e.g. atddocker/atd-bond-reporting:<git sha>")
    commands.add_parser("pools", help="only create the work pools prefect.yaml names that are missing")
    alerts = commands.add_parser("alerts", help="create or update the failure and staleness alerts")
    alerts.add_argument("--block", required=True, metavar="TYPE/NAME", help="notification block, e.g. slack-webhook/x")
    alerts.add_argument("--deployment", metavar="FLOW/NAME", help="default: bond-reporting/<prefect.yaml's deployment>")
    args = parser.parse_args(argv)
    logs.setup_logging()

    def job() -> None:
        if args.command == "deploy":
            deploy(args.image)
        elif args.command == "pools":
            ensure_work_pools(deployment_specs())
        else:
            apply_alerts(args.block, args.deployment)

    return run_main(job, f"deployment {args.command}")


if __name__ == "__main__":
    sys.exit(main())
