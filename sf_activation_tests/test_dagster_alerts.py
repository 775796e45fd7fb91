"""Alert sensors against a real Dagster instance, the emulator and a local webhook
receiver (an `http.server` thread on 127.0.0.1): one message for a failed
`rejected_rows` check, none on the next tick; one for a run that failed otherwise; one for
a run that stopped early on the API budget. Messages name the model, the counts, the top
error codes and link the Dagster run.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from sf_activation.dagster.alerts import ALERT_SENSOR_NAME, BUDGET_SENSOR_NAME
from sf_activation.dagster.resources import SalesforceResource, SyncSettingsResource
from sf_activation.definitions import build_definitions, job_name
from sf_activation_tests.support.emulator import EmulatorHandle
from sf_activation_tests.support.reliability import create_accounts, model_body
from sf_activation_tests.support.workspace import Workspace

DAGSTER_URL = "http://dagster.internal:3000"


class Receiver:
    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    hook = Receiver()
    monkeypatch.setenv("SF_ACTIVATION_ALERT_WEBHOOK_URL", hook.url)
    monkeypatch.setenv("SF_ACTIVATION_DAGSTER_URL", DAGSTER_URL)
    yield hook
    hook.close()


def _definitions(ws: Workspace, emulator: EmulatorHandle, **salesforce: str) -> dg.Definitions:
    return build_definitions(
        ws.models,
        resources={
            "salesforce": SalesforceResource(
                instance_url=emulator.instance_url,
                access_token=emulator.access_token,
                ca_bundle=str(emulator.ca_bundle),
                **salesforce,
            ),
            "sync_settings": SyncSettingsResource(
                warehouse_url=f"duckdb:///{ws.warehouse}",
                models_dir=str(ws.models),
                state_url=ws.state_url,
                rejects_url=ws.rejects_url,
            ),
        },
        declare_dbt_assets=False,
        automation=False,
    )


class Ticker:
    """Evaluates one sensor tick after tick, carrying its cursor as the daemon does."""

    def __init__(self, defs: dg.Definitions, name: str, instance: dg.DagsterInstance) -> None:
        self.sensor = defs.resolve_sensor_def(name)
        self.repo = defs.get_repository_def()
        self.instance = instance
        self.cursor: str | None = None

    def tick(self) -> None:
        context = dg.build_sensor_context(
            instance=self.instance, repository_def=self.repo, cursor=self.cursor
        )
        result = self.sensor.evaluate_tick(context)
        self.cursor = result.cursor


def test_alerts_once_for_a_failed_check_and_once_for_a_failed_run(
    tmp_path: Path, emulator: EmulatorHandle, receiver: Receiver
) -> None:
    ws = Workspace(tmp_path / "ws", emulator)
    create_accounts(ws, 5)  # 7 rows rejected of 12: far above max_reject_rate
    ws.model("m", model_body("upsert", "composite", extra="max_reject_rate: 0.05\n"))
    defs = _definitions(ws, emulator)
    assert (
        defs.resolve_sensor_def(ALERT_SENSOR_NAME).default_status == dg.DefaultSensorStatus.STOPPED
    )
    job = defs.resolve_job_def(job_name("m"))
    with dg.instance_for_test() as instance:
        failures = Ticker(defs, ALERT_SENSOR_NAME, instance)
        failures.tick()  # the first tick starts the cursor: nothing to tell yet
        assert receiver.posts == []

        checked = job.execute_in_process(instance=instance, raise_on_error=False)
        assert not checked.success
        failures.tick()
        assert len(receiver.posts) == 1
        text = receiver.posts[0]["text"]
        assert "m: rejected_rows failed: 7 rows rejected" in text
        assert "INVALID_FIELD 3" in text and "DUPLICATE_PRIMARY_KEY 2" in text
        assert f"{DAGSTER_URL}/runs/{checked.run_id}" in text
        assert "sync run failed" not in text  # the check is the incident, told once

        failures.tick()
        failures.tick()
        assert len(receiver.posts) == 1  # not again on the next ticks

        # A run failing for another reason: the warehouse table is gone.
        ws.sql("DROP TABLE accounts")
        broken = job.execute_in_process(instance=instance, raise_on_error=False)
        assert not broken.success
        failures.tick()
        assert len(receiver.posts) == 2
        text = receiver.posts[1]["text"]
        assert ":x: m: sync run failed:" in text and "accounts" in text
        assert f"{DAGSTER_URL}/runs/{broken.run_id}" in text
        failures.tick()
        assert len(receiver.posts) == 2
    assert emulator.access_token not in json.dumps(receiver.posts)


def test_alerts_once_for_a_run_stopped_on_the_api_budget(
    tmp_path: Path, emulator: EmulatorHandle, receiver: Receiver
) -> None:
    ws = Workspace(tmp_path / "ws", emulator)
    ws.sql(
        "CREATE TABLE accounts AS SELECT 'B-' || i AS account_id, 'Row ' || i AS name, "
        "i * 1.0 AS revenue, CAST(NULL AS VARCHAR) AS parent_id FROM range(10) t(i)"
    )
    ws.model("m", model_body("upsert", "composite"))
    # The describe call learns the org's usage; the budget then allows no send.
    defs = _definitions(ws, emulator, max_api_usage_share="0.00001")
    job = defs.resolve_job_def(job_name("m"))
    with dg.instance_for_test() as instance:
        budget = Ticker(defs, BUDGET_SENSOR_NAME, instance)
        failures = Ticker(defs, ALERT_SENSOR_NAME, instance)
        budget.tick()
        failures.tick()
        result = job.execute_in_process(instance=instance, raise_on_error=False)
        assert result.success
        budget.tick()
        failures.tick()
        budget.tick()
    assert len(receiver.posts) == 1, receiver.posts
    text = receiver.posts[0]["text"]
    assert "m: stopped early on the API budget" in text and "to_send 10" in text
    assert f"{DAGSTER_URL}/runs/{result.run_id}" in text
