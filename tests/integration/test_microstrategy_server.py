"""The project's MicroStrategy server speaks the protocol of docs/microstrategy-rest.md (raw requests)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import requests

from scripts.mstr_server import (
    ALL_BONDS_ID,
    BOND_2020_ID,
    Fault,
    MstrServer,
    Report,
    generated_report,
)
from tests.support import ROOT
from tests.support.mstr_support import (
    ALL_BONDS_HEADER,
    PASSWORD,
    PROJECT_ID,
    USERNAME,
    all_bonds_report,
    example_report,
)

FIELDS = "-data.metricValues.formatted,-data.metricValues.extras"


@pytest.fixture
def server():
    with MstrServer([example_report("R1")], username=USERNAME, password=PASSWORD, project_id=PROJECT_ID) as srv:
        yield srv


def login(server: MstrServer) -> requests.Session:
    session = requests.Session()
    response = session.post(
        f"{server.base_url}/api/auth/login",
        json={"username": USERNAME, "password": PASSWORD, "loginMode": 1},
        timeout=5,
    )
    assert response.status_code == 204
    assert response.content == b""
    session.headers["X-MSTR-AuthToken"] = response.headers["X-MSTR-AuthToken"]
    session.headers["X-MSTR-ProjectID"] = PROJECT_ID
    assert "JSESSIONID" in session.cookies
    return session


def test_login_gives_token_and_session_cookie(server):
    login(server)
    assert len(server.sessions) == 1


def test_login_accepts_form_encoding(server):
    response = requests.post(
        f"{server.base_url}/api/auth/login",
        data={"username": USERNAME, "password": PASSWORD, "loginMode": "1"},
        timeout=5,
    )
    assert response.status_code == 204


@pytest.mark.parametrize(
    "body",
    [
        {"username": USERNAME, "password": "wrong", "loginMode": 1},
        {"username": "someone", "password": PASSWORD, "loginMode": 1},
        {"username": USERNAME, "password": PASSWORD, "loginMode": 16},
    ],
)
def test_bad_login_is_401_err003_with_ticket(server, body):
    response = requests.post(f"{server.base_url}/api/auth/login", json=body, timeout=5)
    assert response.status_code == 401
    assert response.json()["code"] == "ERR003"
    assert response.json()["ticketId"] == server.tickets[-1]
    assert PASSWORD not in str(server.calls)


def test_token_and_cookie_are_both_required(server):
    session = login(server)
    url = f"{server.base_url}/api/v2/reports/R1/instances"
    without_cookie = requests.post(url, json={}, headers=dict(session.headers), timeout=5)
    assert (without_cookie.status_code, without_cookie.json()["code"]) == (401, "ERR009")
    session.headers.pop("X-MSTR-AuthToken")
    without_token = session.post(url, json={}, timeout=5)
    assert (without_token.status_code, without_token.json()["code"]) == (401, "ERR009")


@pytest.mark.parametrize("project", [None, "00000000000000000000000000000000"])
def test_project_header_is_checked(server, project):
    session = login(server)
    session.headers.pop("X-MSTR-ProjectID")
    headers = {"X-MSTR-ProjectID": project} if project else {}
    response = session.post(f"{server.base_url}/api/v2/reports/R1/instances", json={}, headers=headers, timeout=5)
    assert (response.status_code, response.json()["code"]) == (400, "ERR006")
    assert "Project ID" in response.json()["message"]


def test_unknown_report_and_instance_are_404_err004(server):
    session = login(server)
    response = session.post(f"{server.base_url}/api/v2/reports/NOPE/instances", json={}, timeout=5)
    assert (response.status_code, response.json()["code"]) == (404, "ERR004")
    response = session.get(f"{server.base_url}/api/v2/reports/R1/instances/NOPE", timeout=5)
    assert (response.status_code, response.json()["code"]) == (404, "ERR004")


def test_pages_have_the_documented_shape_with_page_local_elements(server):
    """The worked example of doc §7, page by page."""
    session = login(server)
    first = session.post(
        f"{server.base_url}/api/v2/reports/R1/instances",
        params={"offset": 0, "limit": 2, "fields": FIELDS},
        json={"subtotals": {"visible": False}},
        timeout=5,
    ).json()
    assert first["status"] == 1
    grid, data = first["definition"]["grid"], first["data"]
    assert grid["metricsPosition"] == {"axis": "columns", "index": 0}
    assert [(a["name"], [f["name"] for f in a["forms"]]) for a in grid["rows"]] == [
        ("Fund", ["Code", "Long Name"]),
        ("Date", ["ID"]),
    ]
    assert [e["formValues"] for e in grid["rows"][0]["elements"]] == [["8526", "2020 Mobility Bond - Prop B"]]
    assert [e["formValues"] for e in grid["rows"][1]["elements"]] == [["10/03/2022"], ["10/01/2022"]]
    assert [m["name"] for m in grid["columns"][-1]["elements"]] == ["Obligated", "Expenses"]
    assert data["paging"] == {"total": 3, "current": 2, "offset": 0, "limit": 2}
    assert data["headers"] == {"rows": [[0, 1], [0, 0]], "columns": [[0, 1]]}
    assert data["metricValues"] == {"raw": [[1250.5, 0], [0, 310.25]]}
    # Integral values travel as JSON integers.
    assert isinstance(data["metricValues"]["raw"][0][1], int)

    second = session.get(
        f"{server.base_url}/api/v2/reports/R1/instances/{first['instanceId']}",
        params={"offset": 2, "limit": 2, "fields": FIELDS},
        timeout=5,
    ).json()
    rows = second["definition"]["grid"]["rows"]
    assert [e["formValues"] for e in rows[0]["elements"]] == [["8113", "2016 Mobility Bond - Prop 1"]]
    assert [e["formValues"] for e in rows[1]["elements"]] == [["10/03/2022"]]
    assert second["data"]["paging"] == {"total": 3, "current": 1, "offset": 2, "limit": 2}
    assert second["data"]["headers"]["rows"] == [[0, 0]]
    assert second["data"]["metricValues"]["raw"] == [[-75, 1200]]


def test_formatted_and_extras_are_sent_unless_excluded(server):
    session = login(server)
    page = session.post(f"{server.base_url}/api/v2/reports/R1/instances?limit=-1", json={}, timeout=5).json()
    assert page["data"]["paging"]["current"] == 3
    assert page["data"]["metricValues"]["formatted"][2] == ["($75.00)", "$1,200.00"]
    assert len(page["data"]["metricValues"]["extras"]) == 3


def test_page_cap_limits_rows_per_page(server):
    server.page_cap = 1
    session = login(server)
    page = session.post(f"{server.base_url}/api/v2/reports/R1/instances?limit=50", json={}, timeout=5).json()
    assert page["data"]["paging"] == {"total": 3, "current": 1, "offset": 0, "limit": 50}


def test_prompted_report_answers_status_2_without_data(server):
    server.add_report(Report.from_rows("P1", "Prompted", [("Date", ["ID"])], [], [], prompted=True))
    page = login(server).post(f"{server.base_url}/api/v2/reports/P1/instances", json={}, timeout=5).json()
    assert page["status"] == 2
    assert "data" not in page


def test_logout_ends_the_session_and_its_instances(server):
    session = login(server)
    instance = session.post(f"{server.base_url}/api/v2/reports/R1/instances?limit=1", json={}, timeout=5).json()
    assert session.post(f"{server.base_url}/api/auth/logout", timeout=5).status_code == 204
    assert server.sessions == {}
    page = session.get(f"{server.base_url}/api/v2/reports/R1/instances/{instance['instanceId']}", timeout=5)
    assert page.status_code == 401
    assert session.post(f"{server.base_url}/api/auth/logout", timeout=5).status_code == 401


def test_idle_sessions_expire(server):
    server.session_timeout = 0.05
    session = login(server)
    time.sleep(0.1)
    response = session.get(f"{server.base_url}/api/v2/reports/R1", timeout=5)
    assert (response.status_code, response.json()["code"]) == (401, "ERR009")


def test_definition_and_status_endpoints(server):
    assert requests.get(f"{server.base_url}/api/status", timeout=5).json()["webVersion"]
    definition = login(server).get(f"{server.base_url}/api/v2/reports/R1", timeout=5).json()
    assert definition["name"] == "Worked example"
    assert [a["name"] for a in definition["definition"]["grid"]["rows"]] == ["Fund", "Date"]


def test_paths_outside_the_api_are_plain_404(server):
    response = requests.post(f"{server.base_url}/api/api/auth/login", json={}, timeout=5)
    assert response.status_code == 404


def test_faults_fire_the_given_number_of_times(server):
    server.faults.append(Fault("status", status=503, times=2))
    codes = [requests.get(f"{server.base_url}/api/status", timeout=5).status_code for _ in range(3)]
    assert codes == [503, 503, 200]
    server.faults[:] = [Fault("login", status=503, times=1)]
    body = {"username": USERNAME, "password": PASSWORD, "loginMode": 1}
    codes = [requests.post(f"{server.base_url}/api/auth/login", json=body, timeout=5).status_code for _ in range(2)]
    assert codes == [503, 204]


def test_report_from_a_legacy_csv_groups_forms_back_into_attributes(tmp_path):
    report, text = all_bonds_report(tmp_path)
    assert report.attributes == [
        ("Fund", ["Code", "Long Name"]),
        ("Division (As-Is)", ["Code", "Long Name"]),
        ("Department", ["Dept", "Long Name"]),
        ("Date", ["ID"]),
        ("Group (As-Is)", ["Code", "Long Name"]),
    ]
    assert report.metrics == ["Obligated", "Expenses"]
    assert report.name == "All bonds Expenses Obligated"
    assert ",".join(report.columns) == ALL_BONDS_HEADER
    assert report.total == text.count("\n") - 2  # header line, and one cell holds a newline
    assert report.row(1)[-2:] == [0, None]  # "0.0" → 0 (JSON int), empty → null


def test_report_from_csv_keeps_a_lone_at_column_and_rejects_bad_numbers(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("A@Code,Fund,Obligated\nx,y,1.5\n")
    report = Report.from_csv("X", path, metrics=["Obligated"])
    assert report.columns == ["A@Code", "Fund", "Obligated"]
    path.write_text('Fund,Obligated\ny,"1,000.50"\n')
    with pytest.raises(ValueError, match="not a number"):
        Report.from_csv("X", path, metrics=["Obligated"])


def test_generated_reports_have_the_documented_headers_and_are_lazy():
    all_bonds = generated_report(ALL_BONDS_ID, 10**12)
    assert ",".join(all_bonds.columns) == ALL_BONDS_HEADER
    assert len(all_bonds.row(10**12 - 1)) == 11
    assert generated_report(BOND_2020_ID, 5).columns == [
        "Fund",
        "Department",
        "Date",
        "Group",
        "Fiscal Year",
        "Division",
        "Obligated",
        "Expenses",
    ]


def test_command_line_server_serves_csv_and_generated_reports(tmp_path):
    all_bonds_report(tmp_path)  # writes all_bonds_source.csv
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "scripts" / "mstr_server.py"),
            "--report",
            f"R9={tmp_path / 'all_bonds_source.csv'}",
            "--generate",
            f"{BOND_2020_ID}=123",
            "--password",
            PASSWORD,
            "--project-id",
            PROJECT_ID,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stdout.readline().strip()
        assert first.startswith("listening on http://127.0.0.1:")
        server_url = first.removeprefix("listening on ")
        session = requests.Session()
        response = session.post(
            f"{server_url}/api/auth/login", json={"username": USERNAME, "password": PASSWORD, "loginMode": 1}, timeout=5
        )
        session.headers.update(
            {"X-MSTR-AuthToken": response.headers["X-MSTR-AuthToken"], "X-MSTR-ProjectID": PROJECT_ID}
        )
        page = session.post(f"{server_url}/api/v2/reports/{BOND_2020_ID}/instances?limit=10", json={}, timeout=5).json()
        assert page["data"]["paging"]["total"] == 123
        page = session.post(f"{server_url}/api/v2/reports/R9/instances?limit=10", json={}, timeout=5).json()
        assert page["data"]["paging"]["total"] == 23
    finally:
        proc.terminate()
        proc.wait(timeout=10)
