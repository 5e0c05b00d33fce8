"""Prefect flows (the deployment entry point is ``flows.pipeline:bond_reporting``)."""
