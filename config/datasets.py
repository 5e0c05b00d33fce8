"""The seven Socrata datasets the calculation step publishes (docs/data-contract.md §5.0), in publish order.

Configuration as data: each entry names the dataset id, what it holds, the builder in
``bond_reporting.calculations.BUILDERS`` that computes its payload, and the database tables that
builder reads. Changing a dataset id, the publish order or which tables are read happens here only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bond_reporting import selection
from config import sources

# The tables the calculations read (names spelled once, in config/sources.py).
EXPENSES_2020 = sources.EXPENSES_2020.table
EXPENSES_ALL_BONDS = sources.EXPENSES_ALL_BONDS.table
LOOKUP_2020 = sources.LOOKUP_2020.table
BASELINE_2020 = sources.BASELINE_2020.table
CURRENT_PLAN_2020 = sources.CURRENT_PLAN_2020.table
PREVIOUS_PLAN_2020 = sources.PREVIOUS_PLAN_2020.table
APPROPRIATIONS = sources.APPROPRIATIONS.table
PROGRAM_NAMES = sources.PROGRAM_NAMES.table
LOOKUP_ALL_BONDS = sources.LOOKUP_ALL_BONDS.table
# Not a calculation input; the run report names the 2020 programs with it (docs/data-contract.md §3.1 G10).
PROGRAM_NAMES_2020 = sources.PROGRAM_NAMES_2020.table

# The summary tables need both plans: the current-FY plan decides the current fiscal year (§5.4.1).
_SUMMARY_TABLES = (EXPENSES_2020, LOOKUP_2020, BASELINE_2020, CURRENT_PLAN_2020, PREVIOUS_PLAN_2020)


@dataclass(frozen=True)
class Dataset:
    """One published dataset: its Socrata id, what it holds, its builder and the tables it reads."""

    id: str
    title: str
    builder: str
    tables: tuple[str, ...]


DATASETS: tuple[Dataset, ...] = (
    Dataset(
        "vs3t-h2aj",
        "2020 bond expenses, zero-filled, running sums, all fiscal years ('current FY')",
        "expenses_2020_all_years",
        (EXPENSES_2020,),
    ),
    Dataset(
        "jdna-s8qn",
        "2020 bond expenses, every fiscal year before the latest booked one ('previous FY')",
        "expenses_2020_before_latest_year",
        (EXPENSES_2020,),
    ),
    Dataset(
        "rrww-ybw6",
        "All bonds expenses, zero-filled, first row per (group, date), running sums",
        "expenses_all_bonds",
        (EXPENSES_ALL_BONDS,),
    ),
    Dataset("hq9n-d77y", "2020 bond summary table, current fiscal year", "summary_current_year", _SUMMARY_TABLES),
    Dataset("5ewg-ssu3", "2020 bond summary table, previous fiscal year", "summary_previous_year", _SUMMARY_TABLES),
    Dataset(
        "9ufs-k2md",
        "All bonds program metadata with appropriated totals",
        "all_bonds_metadata",
        (PROGRAM_NAMES, APPROPRIATIONS),
    ),
    Dataset("mri6-eexh", "All bonds AIMS group id → dashboard id lookup", "all_bonds_lookup", (LOOKUP_ALL_BONDS,)),
)

DATASET_IDS: tuple[str, ...] = tuple(d.id for d in DATASETS)

# The tables whose newest `date` is reported as "data as of" (the freshness line).
EXPENSE_TABLES: tuple[str, ...] = (EXPENSES_2020, EXPENSES_ALL_BONDS)


def select(only: Sequence[str] | None = None) -> tuple[Dataset, ...]:
    """The datasets named in ``only`` (all when None or empty), always in publish order.

    An unknown id is a ConfigError (exit 2) listing the known ids.
    """
    wanted = set(selection.select(only or None, DATASET_IDS, "dataset id"))
    return tuple(d for d in DATASETS if d.id in wanted)


def tables_for(datasets: tuple[Dataset, ...]) -> list[str]:
    """Every table the given datasets read, each once, in first-use order."""
    return list(dict.fromkeys(table for d in datasets for table in d.tables))
