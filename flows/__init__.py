"""Prefect flows (the deployment entry point is flows.bond_reporting:bond_reporting)."""
