"""Edit a sample CSV the way a person edits a sheet: one physical line or one cell at a time.

Lines are numbered as the error messages number them (1 = the header). Cells are split on plain
commas: the sample files have no quoted commas in the lines the tests edit.
"""

from __future__ import annotations

from pathlib import Path


def set_line(path: Path, line_no: int, text: str) -> None:
    """Replace physical line ``line_no`` with ``text``."""
    lines = path.read_text().splitlines()
    lines[line_no - 1] = text
    path.write_text("\n".join(lines) + "\n")


def set_cell(path: Path, line_no: int, header: str, value: str) -> None:
    """Set the cell under ``header`` on physical line ``line_no``."""
    lines = path.read_text().splitlines()
    cells = lines[line_no - 1].split(",")
    cells[lines[0].split(",").index(header)] = value
    set_line(path, line_no, ",".join(cells))


def append_copy_of_line(path: Path, line_no: int) -> int:
    """Append a copy of physical line ``line_no``; returns the new line's number."""
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, lines[line_no - 1]]) + "\n")
    return len(lines) + 1
