"""Does this Python satisfy pyproject.toml's ``requires-python``? One line and exit 2 if not.

The Makefile runs it with ``$(PYTHON)`` before it makes ``.venv``, so it must run on any Python 3
(no tomllib, no packaging): ``requires-python`` is a comma-separated list of ``>=``, ``>``,
``<=``, ``<``, ``==`` and ``!=`` clauses on release numbers.
"""

import operator
import platform
import re
import sys
from pathlib import Path

OPERATORS = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}


def requires_python(pyproject: Path) -> str:
    match = re.search(r'^requires-python\s*=\s*"([^"]+)"', pyproject.read_text(), re.MULTILINE)
    if not match:
        raise SystemExit(f"{pyproject}: no requires-python")
    return match.group(1)


def satisfies(version: tuple, spec: str) -> bool:
    for clause in spec.split(","):
        match = re.fullmatch(r"\s*(>=|<=|==|!=|>|<)\s*(\d+(?:\.\d+)*)\s*", clause)
        if not match:
            raise SystemExit(f"requires-python clause {clause.strip()!r} is not understood by {__file__}")
        wanted = tuple(int(part) for part in match.group(2).split("."))
        if not OPERATORS[match.group(1)](tuple(version[: len(wanted)]), wanted):
            return False
    return True


def main() -> int:
    spec = requires_python(Path(__file__).resolve().parents[1] / "pyproject.toml")
    if satisfies(sys.version_info[:3], spec):
        return 0
    print(
        f"make: Python {platform.python_version()} ({sys.executable}) does not satisfy requires-python "
        f"{spec!r} (pyproject.toml); run e.g. `make PYTHON=python3.11 ...` (.venv is then made anew)",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
