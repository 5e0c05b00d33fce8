"""The small failing inputs of ``../shared/cases/`` (one folder per case, one source file each).

CI has ``../shared`` beside the clone; a fresh clone alone reads the copy in ``tests/data/cases/``.
"""

from __future__ import annotations

from pathlib import Path

from tests.support import ROOT

SHARED_CASES = ROOT.parent / "shared" / "cases"
LOCAL_CASES = ROOT / "tests" / "data" / "cases"


def case_file(folder: str) -> Path:
    """The one source file of case ``folder``: the shared one if present, else the repository's copy."""
    for root in (SHARED_CASES, LOCAL_CASES):
        files = sorted((root / folder).glob("*.csv"))
        if files:
            assert len(files) == 1, files
            return files[0]
    raise FileNotFoundError(f"no case {folder!r} in {SHARED_CASES} or {LOCAL_CASES}")
