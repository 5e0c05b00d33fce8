"""check-config's closing line: a skipped check is not counted as passed."""

from bond_reporting.check_config import FAIL, OK, SKIP, Check, summary_line


def test_skipped_checks_are_not_counted_as_passed():
    checks = [Check(OK, "a", ""), Check(FAIL, "b", ""), Check(SKIP, "c", ""), Check(SKIP, "d", "")]
    assert summary_line(checks) == "check-config: 1 of 4 checks passed, 1 failed, 2 skipped"


def test_all_passed_says_only_that():
    assert summary_line([Check(OK, "a", ""), Check(OK, "b", "")]) == "check-config: 2 of 2 checks passed"
