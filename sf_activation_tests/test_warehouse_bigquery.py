"""BigQuery: the real google-cloud-bigquery client over HTTP against bqemulator."""

from __future__ import annotations

import datetime as dt
import http.client
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit

import pyarrow as pa
import pytest

from sf_activation.warehouse import BIGQUERY_ENDPOINT_ENV, Warehouse, WarehouseError
from sf_activation_tests.support.bqemulator import BigQueryEmulator
from sf_activation_tests.support.bqemulator import bq_emulator as bq_emulator

DATASET = "sales_reader"
QUERIES = "/bigquery/v2/projects/{project_id}/queries/{job_id}"  # getQueryResults
JOBS = "/bigquery/v2/projects/{project_id}/jobs"  # jobs.insert


@pytest.fixture(scope="module")
def bq(bq_emulator: BigQueryEmulator) -> BigQueryEmulator:
    """The session's emulator with this module's dataset: `accounts`, 1000 rows of every type."""
    bq_emulator.create_dataset(DATASET)
    bq_emulator.sql(
        """
        CREATE TABLE accounts AS
        SELECT i AS account_id,
               CONCAT('Account ', CAST(i AS STRING)) AS name,
               CAST(i * 1.25 AS NUMERIC) AS arr_usd,
               DATE_ADD(DATE '2024-01-01', INTERVAL i DAY) AS signed_on,
               TIMESTAMP_ADD(TIMESTAMP '2024-01-01 12:00:00+00', INTERVAL i HOUR) AS updated_at,
               DATETIME '2024-01-01 08:30:00' AS local_time,
               MOD(i, 2) = 0 AS is_active,
               i / 4.0 AS score,
               IF(MOD(i, 3) = 0, NULL, 'x') AS maybe,
               PARSE_JSON(CONCAT('{"tier": ', CAST(MOD(i, 3) AS STRING), '}')) AS props,
               [i, i + 1] AS tags
        FROM UNNEST(GENERATE_ARRAY(1, 1000)) AS i
        """,
        dataset=DATASET,
    )
    return bq_emulator


@pytest.fixture
def warehouse(bq: BigQueryEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Warehouse]:
    monkeypatch.setenv(BIGQUERY_ENDPOINT_ENV, bq.endpoint)
    with Warehouse.from_url(bq.url(DATASET)) as wh:
        yield wh


@contextmanager
def page_cap_proxy(upstream: str, max_rows: int) -> Iterator[tuple[str, list[str]]]:
    """A pass-through HTTP proxy to `upstream` serving getQueryResults pages of at most
    `max_rows` rows; yields its URL and the paths it forwarded.

    bqemulator always answers a page with exactly the `maxResults` rows the client asked
    for (= the reader's batch size), so pages smaller than a batch, which BigQuery sends
    when a page would pass its ~10 MB response limit, cannot happen against it alone.
    """
    target = urlsplit(upstream)
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def _forward(self) -> None:
            parts = urlsplit(self.path)
            query = parse_qsl(parts.query, keep_blank_values=True)
            if re.fullmatch(r"/bigquery/v2/projects/[^/]+/queries/[^/]+", parts.path):
                asked = [int(v) for k, v in query if k == "maxResults"] or [max_rows]
                query = [(k, v) for k, v in query if k != "maxResults"]
                query.append(("maxResults", str(min(asked[0], max_rows))))
            seen.append(f"{self.command} {parts.path}")
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {
                k: v
                for k, v in self.headers.items()
                if k.lower() not in ("host", "connection", "content-length")
            }
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
            try:
                conn.request(
                    self.command, f"{parts.path}?{urlencode(query)}", body=body, headers=headers
                )
                resp = conn.getresponse()
                data = resp.read()
            finally:
                conn.close()
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("connection", "content-length", "transfer-encoding"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="page cap proxy", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_pages_are_streamed_into_full_batches_with_types(
    bq: BigQueryEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pages of at most 300 rows, whatever the client asks: a result spans many pages.
    with page_cap_proxy(bq.endpoint, max_rows=300) as (url, seen):
        monkeypatch.setenv(BIGQUERY_ENDPOINT_ENV, url)
        before = bq.request_counts()
        with Warehouse.from_url(bq.url(DATASET)) as warehouse:
            batches = list(
                warehouse.iter_batches("SELECT * FROM accounts ORDER BY account_id", 400)
            )
        after = bq.request_counts()

    # 1000 rows in pages of 300 came back as batches of 400, 400, 200.
    assert [b.num_rows for b in batches] == [400, 400, 200]
    pages = [r for r in seen if "/queries/" in r]
    assert len(pages) >= 4
    # Every request the client sent was answered successfully.
    assert {k[2] for k, n in after.items() if n != before.get(k, 0)} == {"2xx"}

    schema = batches[0].schema
    assert all(b.schema == schema for b in batches)
    types = {f.name: f.type for f in schema}
    assert types == {
        "account_id": pa.int64(),
        "name": pa.string(),
        "arr_usd": pa.decimal128(38, 9),  # BigQuery NUMERIC
        "signed_on": pa.date32(),
        "updated_at": pa.timestamp("us", tz="UTC"),
        "local_time": pa.timestamp("us"),  # DATETIME
        "is_active": pa.bool_(),
        "score": pa.float64(),
        "maybe": pa.string(),
        "props": pa.string(),
        "tags": pa.list_(pa.int64()),
    }
    rows = [r for b in batches for r in b.to_pylist()]
    assert [r["account_id"] for r in rows] == list(range(1, 1001))
    r3 = rows[2]
    assert r3["name"] == "Account 3"
    assert r3["arr_usd"] == Decimal("3.75")
    assert r3["signed_on"] == dt.date(2024, 1, 4)
    assert r3["updated_at"] == dt.datetime(2024, 1, 1, 15, tzinfo=dt.UTC)
    assert r3["local_time"] == dt.datetime(2024, 1, 1, 8, 30)
    assert r3["is_active"] is False and r3["score"] == 0.75
    assert r3["maybe"] is None
    assert r3["props"] == '{"tier":0}'  # JSON comes back as its compact text
    assert r3["tags"] == [3, 4]


def test_batches_follow_the_emulator_pages(warehouse: Warehouse, bq: BigQueryEmulator) -> None:
    before = bq.request_counts()
    batches = list(warehouse.iter_batches("SELECT account_id FROM accounts", 400))
    after = bq.request_counts()
    assert [b.num_rows for b in batches] == [400, 400, 200]
    # One page a batch: the reader asks for pages of its batch size.
    assert after.get(("GET", QUERIES, "2xx"), 0) - before.get(("GET", QUERIES, "2xx"), 0) == 3


def test_columns_come_from_a_dry_run(warehouse: Warehouse, bq: BigQueryEmulator) -> None:
    jobs_before = {job.job_id for job in bq.client.list_jobs()}
    before = bq.request_counts()
    assert warehouse.columns("SELECT account_id, name AS AccountName FROM accounts") == [
        "account_id",
        "AccountName",
    ]
    after = bq.request_counts()
    # One dry-run jobs.insert and no result pages read. (BigQuery keeps no job for a dry
    # run; bqemulator lists it, marked as a dry run.)
    sent = {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}
    assert sent == {("POST", JOBS, "2xx"): 1}
    new_jobs = [job for job in bq.client.list_jobs() if job.job_id not in jobs_before]
    assert [job.dry_run for job in new_jobs] == [True]


def test_empty_result(warehouse: Warehouse) -> None:
    assert list(warehouse.iter_batches("SELECT * FROM accounts WHERE account_id < 0")) == []


def test_sql_errors_are_one_line(warehouse: Warehouse, bq: BigQueryEmulator) -> None:
    with pytest.raises(WarehouseError) as err:
        list(warehouse.iter_batches("SELECT nope FROM accounts"))
    # bqemulator passes DuckDB's binder message through (BigQuery says "Unrecognized name").
    assert re.fullmatch(
        re.escape(
            f"query failed (bigquery://{bq.project}/{DATASET}): Query execution failed: "
            'Binder Error: Referenced column "nope" not found in FROM clause!'
        )
        + r"[^\n]*",
        str(err.value),
    ), str(err.value)
    with pytest.raises(WarehouseError, match='^query failed .*"nope" not found[^\n]*$'):
        warehouse.columns("SELECT nope FROM accounts")


def test_url_parameters_are_checked_and_secrets_masked() -> None:
    with pytest.raises(WarehouseError, match="needs a project"):
        Warehouse.from_url("bigquery://")
    with pytest.raises(WarehouseError, match=r"unknown BigQuery URL parameter\(s\) \['colour'\]"):
        Warehouse.from_url("bigquery://p/d?colour=blue")
    wh = Warehouse.from_url("bigquery://p/d?location=EU&credentials_path=/keys/sa.json")
    assert wh.display_url == "bigquery://p/d?credentials_path=%2Fkeys%2Fsa.json&location=EU"
