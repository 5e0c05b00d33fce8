"""Shared test support, one place for every fake and helper: real services on loopback
(PostgreSQL, S3, file server), protocol servers (Socrata; MicroStrategy lives in
``scripts/mstr_server.py`` because the demo uses it too), frame builders and the Prefect harness.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository root."""
