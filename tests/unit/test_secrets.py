"""DATABASE_URL's password is masked whatever its shape (issue 9 §5, issue 13 §5).

Each shape: the value as a user may mistype it, the password, and the fragments a driver error
is known to quote (a raw '@' makes libpq read the rest as the host; a raw '/' the rest as the
port; a bad %-escape is quoted whole). None may survive ``logs.redact``; values libpq cannot
parse are refused with one line that does not echo them.
"""

from __future__ import annotations

import pytest

from bond_reporting import logs
from bond_reporting.database import NOT_LIBPQ, check_database_url
from bond_reporting.errors import ConfigError
from bond_reporting.settings import Settings

# (shape, DATABASE_URL, the secret, fragments a driver error may quote, libpq parses it as meant)
SHAPES = [
    ("well-formed", "postgresql://etl:Plain-pw-4417@db.example.com:5432/bonds", "Plain-pw-4417", [], True),
    (
        "raw @",
        "postgresql://etl:p@ss-w0rd-1@db.example.com:5432/bonds",
        "p@ss-w0rd-1",
        ['could not translate host name "ss-w0rd-1@db.example.com" to address'],
        False,
    ),
    (
        "raw /",
        "postgresql://etl:s3cr/etpw0rd@db.example.com/bonds",
        "s3cr/etpw0rd",
        ['invalid integer value "s3cr" for connection option "port"', "etpw0rd@db.example.com"],
        False,
    ),
    (
        "raw :",
        "postgresql://etl:pa:ssw0rd9@db.example.com/bonds",
        "pa:ssw0rd9",
        ['password authentication failed for user "etl" (password pa:ssw0rd9)'],
        True,
    ),
    (
        "bad %-escape",
        "postgresql://etl:db-pw-0c8e42%zz@127.0.0.1:9/bonds",
        "db-pw-0c8e42%zz",
        ['invalid percent-encoded token: "db-pw-0c8e42%zz"'],
        False,
    ),
    (
        "%-encoded @",
        "postgresql://etl:enc%40oded-pw@db.example.com/bonds",
        "enc@oded-pw",
        ["enc%40oded-pw"],
        True,
    ),
    (
        "password in the query string, bad escape",
        "postgresql://db.example.com/bonds?user=etl&password=q-secret-%zz1",
        "q-secret-%zz1",
        ['invalid percent-encoded token: "q-secret-%zz1"'],
        False,
    ),
    (
        "key=value, quoted with spaces",
        "host=db.example.com user=etl password='my secret phrase' dbname=bonds",
        "my secret phrase",
        ["secret phrase"],
        True,
    ),
    (
        "key=value, unquoted spaces",
        "host=db.example.com user=etl password=mysecret phrase2 dbname=bonds",
        "mysecret phrase2",
        ['missing "=" after "phrase2" in connection info string'],
        False,
    ),
    (
        "key=value, escaped quote",
        r"host=db.example.com password='it\'s-hidden 9' dbname=bonds",
        "it's-hidden 9",
        [r"it\'s-hidden"],
        True,
    ),
]
IDS = [shape[0] for shape in SHAPES]


@pytest.fixture(autouse=True)
def no_registered_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no secret registered (they are process-global)."""
    monkeypatch.setattr(logs, "_SECRETS", set())


@pytest.mark.parametrize(("shape", "url", "password", "fragments", "_valid"), SHAPES, ids=IDS)
def test_the_password_and_its_fragments_are_masked(shape, url, password, fragments, _valid):
    Settings.from_env({"DATABASE_URL": url})
    for text in [password, url, *fragments, f"connect {url} failed: {password}"]:
        shown = logs.redact(text)
        assert password not in shown, (shape, shown)
        for piece in password.replace("/", " ").replace("@", " ").replace(":", " ").split():
            if len(piece) >= 4:
                assert piece not in shown, (shape, piece, shown)


@pytest.mark.parametrize(("shape", "url", "password", "fragments", "valid"), SHAPES, ids=IDS)
def test_a_value_libpq_cannot_read_as_meant_is_refused_without_echoing_it(shape, url, password, fragments, valid):
    if valid:
        check_database_url(url)  # no error
        return
    with pytest.raises(ConfigError) as caught:
        check_database_url(url)
    message = str(caught.value)
    assert message.startswith(NOT_LIBPQ)
    assert NOT_LIBPQ == "DATABASE_URL is not a valid libpq URI or key=value string (see docs/operations.md)"
    assert password not in message and url not in message
    assert caught.value.exit_code == 2


def test_masking_does_not_depend_on_registration():
    """Credentials by shape, even for a value nobody registered (another URL setting, a traceback)."""
    text = "failed: postgresql://etl:un@reg/istered@db:5432/x and host=h password='a b c' and password=plain9"
    shown = logs.redact(text)
    assert shown == "failed: postgresql://***@db:5432/x and host=h password=*** and password=***"


def test_ordinary_words_are_not_masked_by_short_pieces():
    Settings.from_env({"DATABASE_URL": "postgresql://etl:ab/cd@db.example.com/bonds"})
    assert logs.redact("table api.ab loaded, cd rows") == "table api.ab loaded, cd rows"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DB_STALL_TIMEOUT", "0"),
        ("DB_STALL_TIMEOUT", "soon"),
        ("LOCK_WAIT_SECONDS", "-1"),
        ("LOCK_WAIT_SECONDS", "inf"),
    ],
)
def test_bad_wait_settings_are_configuration_errors(variable, value):
    settings = Settings.from_env({variable: value})
    with pytest.raises(ConfigError, match=rf"^{variable} must be a positive number of seconds, not '{value}'$"):
        _ = (settings.stall_timeout, settings.lock_wait)


def test_wait_settings_defaults_and_values():
    assert Settings.from_env({}).stall_timeout == 300
    assert Settings.from_env({}).lock_wait == 60
    settings = Settings.from_env({"DB_STALL_TIMEOUT": "2.5", "LOCK_WAIT_SECONDS": "0.5"})
    assert (settings.stall_timeout, settings.lock_wait) == (2.5, 0.5)
