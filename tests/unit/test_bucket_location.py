"""BUCKET values a newcomer mistypes: one line saying what is wrong, not an empty name in quotes."""

import pytest

from bond_reporting.errors import ConfigError
from bond_reporting.settings import Settings
from bond_reporting.storage import open_bucket


@pytest.mark.parametrize("location", ["s3:/atd-microstrategy-reports", "s3://", "s3:///reports"])
def test_s3_location_without_a_bucket_name_says_so(location):
    with pytest.raises(ConfigError) as failure:
        open_bucket(location, Settings.from_env({}))
    line = str(failure.value)
    assert "no bucket name after s3://" in line and "''" not in line and "\n" not in line
