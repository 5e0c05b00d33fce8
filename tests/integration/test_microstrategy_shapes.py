"""Issue 9 item 1: export only what the flat table represents exactly (docs/microstrategy-rest.md §5.1).

Each report shape the flattening cannot represent is served by the protocol server as the real one
sends it; the export must exit 1 with one line naming the report and what to change, before anything
is written: the previous bucket object stays byte-identical. A server that rejects ``fields``
(ERR006, before 11.2.0200) is asked again without it and the export succeeds.
"""

from __future__ import annotations

import logging

import pytest

import microstrategy_to_s3
from bond_reporting import microstrategy
from scripts.mstr_server import ALL_BONDS_ID, MstrServer, Report
from tests.support.mstr_support import FAST, PASSWORD, PROJECT_ID, USERNAME, all_bonds_report, use_server
from tests.support.services import s3_client

ALL_BONDS = "All bonds Expenses Obligated"
KEY = f"{ALL_BONDS}.csv"
PREVIOUS = b"previous,good\n1,2\n"
ROWS = [
    ("8113", "2016 Prop 1", "10/01/2022", "1AB", 100.5, 0),
    ("8113", "2016 Prop 1", "10/02/2022", "1AB", 200, 10.25),
    ("8526", "2020 Prop B", "10/01/2022", "2CD", 300, 20),
    ("8526", "2020 Prop B", "10/03/2022", "2CD", None, 30),
]
ATTRIBUTES = [("Fund", ["Code", "Long Name"]), ("Date", ["ID"]), ("Group", ["ID"])]


def report(**kwargs) -> Report:
    metrics = kwargs.pop("metrics", ["Obligated", "Expenses"])
    return Report.from_rows(ALL_BONDS_ID, ALL_BONDS, ATTRIBUTES, metrics, ROWS, **kwargs)


@pytest.fixture
def serve(monkeypatch, s3_bucket, s3_endpoint):
    """``serve(report, version=...)`` starts a protocol server for it; the bucket holds a previous object."""
    s3_client(s3_endpoint).put_object(Bucket=s3_bucket, Key=KEY, Body=PREVIOUS)
    monkeypatch.setattr(microstrategy, "DEFAULT_POLICY", FAST)
    servers = []

    def start(rep: Report, **server_kwargs) -> MstrServer:
        server = MstrServer([rep], username=USERNAME, password=PASSWORD, project_id=PROJECT_ID, **server_kwargs)
        server.start()
        servers.append(server)
        use_server(monkeypatch, server.base_url)
        return server

    yield start
    for server in servers:
        server.stop()


def previous_object_is_untouched(s3_bucket, s3_endpoint) -> None:
    client = s3_client(s3_endpoint)
    assert client.get_object(Bucket=s3_bucket, Key=KEY)["Body"].read() == PREVIOUS
    assert [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]] == [KEY]


def one_error_line(caplog) -> str:
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "\n" not in errors[0]
    return errors[0]


@pytest.mark.parametrize(
    ("shape", "server_kwargs", "line"),
    [
        (
            {"page_by": ["Fund"]},
            {},
            "microstrategy_to_s3 failed: MicroStrategy report 'All bonds Expenses Obligated': the report has the "
            "page-by attribute 'Fund': the export would hold only the rows of one of its elements; remove the "
            "page-by attribute 'Fund' from the report (or move it to the rows)",
        ),
        (
            {"subtotals": True},
            {"version": "11.2.0000"},  # ignores subtotals.visible=false: sends the totals anyway
            "microstrategy_to_s3 failed: MicroStrategy report 'All bonds Expenses Obligated': the report sends "
            "total/subtotal rows (element 'Total' of 'Fund' on the rows), which would be added up as data "
            "(servers before 11.2.0100 ignore subtotals.visible=false): remove the totals and subtotals from "
            "the report",
        ),
        (
            {"metrics": ["Expenses", "Expenses"]},
            {},
            "microstrategy_to_s3 failed: MicroStrategy report 'All bonds Expenses Obligated': the report would "
            "give 2 columns named 'Expenses' (metric 'Expenses' id {id0} and metric 'Expenses' id {id1}): give "
            "them different names in the report",
        ),
    ],
    ids=["page-by", "subtotals-ignoring-visible-false", "duplicate-metric-names"],
)
def test_unfaithful_shapes_are_refused_and_the_previous_object_stays(
    serve, s3_bucket, s3_endpoint, caplog, shape, server_kwargs, line
):
    server = serve(report(**shape), **server_kwargs)
    assert microstrategy_to_s3.main(["-r", ALL_BONDS, "--page-size", "10"]) == 1
    error = one_error_line(caplog)
    if "{id0}" in line:
        metrics = [c for c in server.calls if c.endpoint == "instance"]
        assert metrics  # the refusal came from the instance's grid
        ids = [m["id"] for m in _first_page(server)["definition"]["grid"]["columns"][0]["elements"]]
        line = line.format(id0=ids[0], id1=ids[1])
        assert ids[0] != ids[1]
    assert error == line
    assert server.count("page") == 0  # refused on the first answer, before any other page
    assert server.sessions == {}  # logged out
    previous_object_is_untouched(s3_bucket, s3_endpoint)


def _first_page(server: MstrServer) -> dict:
    """The grid the server sends for the report (same ids as the instance's first page)."""
    from scripts.mstr_server import page_body

    rep = next(iter(server.reports.values()))
    return page_body(rep, "X", 0, 2)


def test_a_server_that_honours_visible_false_sends_no_totals_and_the_export_succeeds(serve, s3_bucket, s3_endpoint):
    serve(report(subtotals=True))  # 11.4: the designer's totals are hidden as asked
    assert microstrategy_to_s3.main(["-r", ALL_BONDS, "--page-size", "3"]) == 0
    body = s3_client(s3_endpoint).get_object(Bucket=s3_bucket, Key=KEY)["Body"].read().decode()
    assert body.splitlines()[0] == "Fund@Code,Fund@Long Name,Date,Group,Obligated,Expenses"
    assert len(body.splitlines()) == 1 + len(ROWS)
    assert "Total" not in body


def test_totals_on_a_later_page_are_refused_too(serve, s3_bucket, s3_endpoint, caplog):
    """The check runs on every page: the first page is clean, a subtotal arrives on page 2."""
    server = serve(report(subtotals=True), version="11.1.0000")
    assert microstrategy_to_s3.main(["-r", ALL_BONDS, "--page-size", "2"]) == 1
    assert "the report sends total/subtotal rows" in one_error_line(caplog)
    assert server.count("page") == 1
    previous_object_is_untouched(s3_bucket, s3_endpoint)


def test_fields_rejected_with_err006_is_asked_again_without_it_once(serve, s3_bucket, s3_endpoint, tmp_path, caplog):
    rep, text = all_bonds_report(tmp_path)
    server = serve(rep, version="11.2.0100")
    assert microstrategy_to_s3.main(["-r", ALL_BONDS, "--page-size", "5"]) == 0
    assert s3_client(s3_endpoint).get_object(Bucket=s3_bucket, Key=KEY)["Body"].read() == text.encode()
    instances = [c for c in server.calls if c.endpoint == "instance"]
    assert [("fields" in c.params, c.status) for c in instances] == [(True, 400), (False, 200)]
    assert all("fields" not in c.params for c in server.calls if c.endpoint == "page")
    assert server.count("page") == 4
    assert "rejects the 'fields' parameter (ERR006: servers before 11.2.0200); asking again without it" in (caplog.text)


def test_the_protocol_server_sends_page_by_as_the_doc_says(serve):
    """The fake is faithful: only the first page-by element's rows, its attribute absent from the rows."""
    rep = report(page_by=["Fund"])
    from scripts.mstr_server import _view, page_body

    view = _view(rep, show_totals=False, visible_requested=False)
    body = page_body(rep, "I", 0, -1, view=view)
    grid = body["definition"]["grid"]
    assert [a["name"] for a in grid["rows"]] == ["Date", "Group"]
    assert [a["name"] for a in grid["pageBy"]] == ["Fund"]
    assert body["data"]["currentPageBy"] == [0]
    assert body["data"]["paging"]["total"] == 2  # the rows of fund 8526 only (first element, sorted descending)
