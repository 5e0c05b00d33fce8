"""Shared modules of the ATD bond reporting ETL (one job each; see README)."""
