"""The test services themselves work (so a red test elsewhere is about the ETL, not the harness)."""

import psycopg2
import requests

from tests.support.services import s3_client


def test_each_test_gets_an_empty_database(database_url):
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("select count(*) from pg_tables where schemaname = 'api'")
        assert cur.fetchone()[0] == 0


def test_s3_endpoint_round_trips_an_object(s3_endpoint, s3_bucket):
    client = s3_client(s3_endpoint)
    client.put_object(Bucket=s3_bucket, Key="a b.csv", Body=b"x\n1\n")
    assert client.get_object(Bucket=s3_bucket, Key="a b.csv")["Body"].read() == b"x\n1\n"


def test_file_server_serves_files_and_faults(file_server):
    from tests.support.services import Fault

    (file_server.root / "ok.csv").write_text("a\n1\n")
    assert requests.get(file_server.url("ok.csv"), timeout=5).text == "a\n1\n"
    file_server.faults["ok.csv"] = Fault(status=500, times=1)
    assert requests.get(file_server.url("ok.csv"), timeout=5).status_code == 500
    assert requests.get(file_server.url("ok.csv"), timeout=5).status_code == 200
