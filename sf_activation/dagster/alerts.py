"""Alerts: a webhook message (Slack-compatible `{"text": ...}`) when a sync needs a human.

Two sensors on Dagster's run-status machinery, both STOPPED until switched on:

- `sf_activation_alerts` (`dg.run_failure_sensor`): a run of these jobs failed. A
  `rejected_rows` check that fails also fails its run (the step raises after recording
  the check), so one failed run is one incident, whatever its cause: the message names
  each model whose check failed (count, rate, top error codes) and otherwise the step's
  one-line error; a model that stopped on the API budget in the same run is named too.
- `sf_activation_budget_alerts` (`dg.run_status_sensor` on SUCCESS): a run that ended
  cleanly but stopped early on the API budget (`stopped: budget` in the `salesforce/<model>`
  materialization): its unsent rows are pending, and will stay so until the budget
  allows, which someone should know.

Once per incident: Dagster keeps each sensor's cursor over run-status events, so a run
is looked at on one tick only; a tick whose post fails raises, the cursor stays, and the
next tick posts again (at least once, never on every tick). `SF_ACTIVATION_ALERT_WEBHOOK_URL`
and `SF_ACTIVATION_DAGSTER_URL` (or `DAGSTER_WEBSERVER_URL`, for the run link) are read
from the daemon's environment on each tick, so switching the URL needs no redeploy.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import dagster as dg
import requests
from pydantic import BaseModel, Field

from sf_activation.dagster.assets import MODEL_TAG
from sf_activation.dagster.metadata import CHECK_NAME

ALERT_SENSOR_NAME = "sf_activation_alerts"
BUDGET_SENSOR_NAME = "sf_activation_budget_alerts"
WEBHOOK_VARIABLE = "SF_ACTIVATION_ALERT_WEBHOOK_URL"
DAGSTER_URL_VARIABLES = ("SF_ACTIVATION_DAGSTER_URL", "DAGSTER_WEBSERVER_URL")
TOP_CODES = 3
POST_TIMEOUT_S = 10.0
ERROR_CHARS = 300


class Incident(BaseModel):
    """One thing to tell about one model in one run."""

    kind: Literal["rejected_rows", "run_failed", "budget"]
    model: str
    counts: dict[str, int | float] = Field(default_factory=dict)
    top_codes: list[tuple[str, int]] = Field(default_factory=list)
    detail: str | None = None


def _value(entry: Any) -> Any:
    return getattr(entry, "value", entry)


def _model_of(key: dg.AssetKey | None, fallback: str) -> str:
    return key.path[-1] if key is not None and key.path else fallback


def _top_codes(by_code: Any) -> list[tuple[str, int]]:
    if not isinstance(by_code, Mapping):
        return []
    ranked = sorted(((str(c), int(n)) for c, n in by_code.items()), key=lambda p: (-p[1], p[0]))
    return ranked[:TOP_CODES]


def _one_line(text: str | None) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    # Dagster prefixes the exception's class: "dagster._core...Failure: <description>".
    head, sep, rest = line.partition(": ")
    if sep and "." in head and " " not in head:
        line = rest
    return line[:ERROR_CHARS]


def run_incidents(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[Incident]:
    """What went wrong in `run`: failed `rejected_rows` checks, budget stops, and for a
    failed run without a failed check, its failed steps' errors."""
    fallback = run.tags.get(MODEL_TAG, run.job_name)
    records = instance.all_logs(
        run.run_id,
        of_type={
            dg.DagsterEventType.ASSET_CHECK_EVALUATION,
            dg.DagsterEventType.ASSET_MATERIALIZATION,
            dg.DagsterEventType.STEP_FAILURE,
        },
    )
    incidents: list[Incident] = []
    failures: list[Incident] = []
    checked: set[str] = set()
    for record in records:
        event = record.dagster_event
        if event is None:
            continue
        data = event.event_specific_data
        if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            if data.check_name != CHECK_NAME or data.passed:
                continue
            model = _model_of(data.asset_key, fallback)
            meta = {k: _value(v) for k, v in data.metadata.items()}
            checked.add(model)
            incidents.append(
                Incident(
                    kind="rejected_rows",
                    model=model,
                    counts={
                        "rejected": int(meta.get("count") or 0),
                        "rate": float(meta.get("rate") or 0.0),
                        "max_reject_rate": float(meta.get("max_reject_rate") or 0.0),
                    },
                    top_codes=_top_codes(meta.get("by_error_code")),
                    detail=str(meta["reject_file"]) if meta.get("reject_file") else None,
                )
            )
        elif event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            mat = data.materialization
            meta = {k: _value(v) for k, v in mat.metadata.items()}
            reason = str(meta.get("stopped_reason") or "")
            if meta.get("stopped") != "budget" and "API budget" not in reason:
                continue
            incidents.append(
                Incident(
                    kind="budget",
                    model=_model_of(mat.asset_key, fallback),
                    counts={
                        k: int(meta[k])
                        for k in ("to_send", "sent", "succeeded", "retried", "api_calls")
                        if isinstance(meta.get(k), int)
                    },
                    detail=reason or None,
                )
            )
        elif event.event_type == dg.DagsterEventType.STEP_FAILURE:
            error = getattr(data, "error", None)
            step = event.step_key or ""
            failures.append(
                Incident(
                    kind="run_failed",
                    model=step.split("__")[-1] if "__" in step else fallback,
                    detail=_one_line(getattr(error, "message", None)) or None,
                )
            )
    if run.status == dg.DagsterRunStatus.FAILURE:
        # A step that failed because its check failed is told once, as the check.
        incidents += [f for f in failures if f.model not in checked]
        if not incidents:
            incidents.append(Incident(kind="run_failed", model=fallback))
    return incidents


def run_link(run_id: str, environ: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    for name in DAGSTER_URL_VARIABLES:
        base = env.get(name)
        if base:
            return f"{base.rstrip('/')}/runs/{run_id}"
    return None


def alert_text(run: dg.DagsterRun, incidents: Iterable[Incident], link: str | None) -> str:
    """The message: one line per incident, then the link (Slack renders <url|text>)."""
    lines = []
    for incident in incidents:
        codes = ", ".join(f"{code} {n}" for code, n in incident.top_codes)
        if incident.kind == "rejected_rows":
            c = incident.counts
            line = (
                f":warning: {incident.model}: rejected_rows failed: {int(c['rejected'])} rows "
                f"rejected ({c['rate']:.2%}, max {c['max_reject_rate']:.2%})"
            )
            if codes:
                line += f"; top errors: {codes}"
            if incident.detail:
                line += f"; reject file: {incident.detail}"
        elif incident.kind == "budget":
            counts = ", ".join(f"{k} {v}" for k, v in incident.counts.items())
            line = f":hourglass: {incident.model}: stopped early on the API budget ({counts})"
            if incident.detail:
                line += f": {incident.detail}"
            line += "; unsent rows stay pending"
        else:
            line = f":x: {incident.model}: sync run failed"
            if incident.detail:
                line += f": {incident.detail}"
        lines.append(line)
    head = f"sf_activation: run {run.run_id[:8]} of {run.job_name}"
    if link:
        head += f" <{link}|open in Dagster>"
    return "\n".join([head, *lines])


def post_alert(url: str, text: str) -> None:
    """POST `{"text": text}` (Slack incoming-webhook shape); raises on a refusal, so the
    tick fails and the next one tries again."""
    response = requests.post(
        url,
        data=json.dumps({"text": text}),
        headers={"Content-Type": "application/json"},
        timeout=POST_TIMEOUT_S,
    )
    if response.status_code >= 300:
        raise RuntimeError(f"alert webhook answered {response.status_code}")


def _notify(context: Any, incidents: list[Incident]) -> dg.SkipReason | None:
    run = context.dagster_run
    if not incidents:
        return dg.SkipReason(f"run {run.run_id}: nothing to alert on")
    url = os.environ.get(WEBHOOK_VARIABLE)
    if not url:
        return dg.SkipReason(f"{WEBHOOK_VARIABLE} is not set; not alerting on run {run.run_id}")
    post_alert(url, alert_text(run, incidents, run_link(run.run_id)))
    context.log.info(f"alerted on run {run.run_id}: {', '.join(i.kind for i in incidents)}")
    return None


def build_alert_sensors(
    monitored_jobs: Sequence[Any] | None = None,
) -> list[dg.SensorDefinition]:
    """The two alert sensors, watching `monitored_jobs` (default: every job of the code
    location). STOPPED by default: a new deployment posts nowhere nobody set up."""

    @dg.run_failure_sensor(
        name=ALERT_SENSOR_NAME,
        monitored_jobs=monitored_jobs,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=(
            f"Posts to {WEBHOOK_VARIABLE} when a sync run fails, naming each model whose "
            "rejected_rows check failed (counts, top error codes) or the step's error."
        ),
    )
    def _failures(context: dg.RunFailureSensorContext) -> dg.SkipReason | None:
        return _notify(context, run_incidents(context.instance, context.dagster_run))

    @dg.run_status_sensor(
        name=BUDGET_SENSOR_NAME,
        run_status=dg.DagsterRunStatus.SUCCESS,
        monitored_jobs=monitored_jobs,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=(
            f"Posts to {WEBHOOK_VARIABLE} when a sync run stopped early on the API budget "
            "(SF_ACTIVATION_MAX_API_USAGE), leaving rows pending."
        ),
    )
    def _budget(context: dg.RunStatusSensorContext) -> dg.SkipReason | None:
        incidents = run_incidents(context.instance, context.dagster_run)
        return _notify(context, [i for i in incidents if i.kind == "budget"])

    return [_failures, _budget]
