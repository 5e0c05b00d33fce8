"""Configuration as data: the registry of sources (sources.py) and the published datasets (datasets.py)."""
