"""Choosing by name: ``--only`` tables, dataset ids, report names. One rule, one message."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from bond_reporting.errors import ConfigError


def select(wanted: Iterable[str] | None, known: Sequence[str], what: str) -> list[str]:
    """The ``known`` names that are ``wanted``, in ``known``'s order; all of them when ``wanted``
    is None. An unknown name is a ConfigError (exit 2) listing every known name, e.g.
    ``unknown table 'x'; known tables: a, b``. ``what`` is the singular noun ("table")."""
    if wanted is None:
        return list(known)
    wanted = list(wanted)
    unknown = [name for name in wanted if name not in known]
    if unknown:
        plural = f"{what}s" if not what.endswith("s") else what
        names = ", ".join(repr(name) for name in unknown)
        spaced = any(" " in name for name in known)  # report names: quote them so the list reads
        listed = ", ".join(repr(name) if spaced else name for name in known)
        raise ConfigError(f"unknown {what if len(unknown) == 1 else plural} {names}; known {plural}: {listed}")
    return [name for name in known if name in wanted]
