"""Rejected rows: JSON Lines at {rejects_url}/{model}/{YYYY-MM-DD}/{run_id}.jsonl.

A run spools its rejects to a local file and uploads it once at the end (one PUT on S3),
before the run's state is compacted, so a rejects store that cannot be written fails the
run while the rows stay pending in state and are retried next time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from sf_activation.testhooks import kill_point  # test hook: no-op unless set

REDACTED = "***REDACTED***"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}$")


# The value-echoing messages of salesforce/coerce.py ("Name: data value too large: <value>
# (max length=255)"); masked when a redacted field was refused before sending.
_ECHOED_VALUE = re.compile(
    r"((?:data value too large|value not of required type|value outside of valid range on "
    r"numeric field|id value of incorrect type|bad value for restricted picklist field): )"
    r".*?( \(max length=\d+\))?$",
    re.DOTALL,
)


class RejectsError(Exception):
    """The rejects store could not be written or read."""


def mask_redacted(value: Any, redact: set[str]) -> Any:
    """Mask the `redact:` fields wherever they appear in a nested sample (before/after too)."""
    if isinstance(value, dict):
        return {
            k: (REDACTED if k in redact and v is not None else mask_redacted(v, redact))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [mask_redacted(v, redact) for v in value]
    return value


def _check_safe(kind: str, value: str) -> str:
    # Model names and run ids become path segments and S3 keys: keep them inside the prefix.
    if not _SAFE_NAME.match(value) or ".." in value:
        raise RejectsError(f"{kind} {value!r} is not a safe name (letters, digits, _ . -)")
    return value


@dataclass(frozen=True)
class RejectLocation:
    """Where the rejects of one model live: a local directory or s3://bucket/prefix."""

    url: str

    @property
    def is_s3(self) -> bool:
        return self.url.startswith("s3://")

    def bucket_and_prefix(self) -> tuple[str, str]:
        parsed = urlparse(self.url)
        return parsed.netloc, parsed.path.strip("/")

    def key(self, model: str, day: str, run_id: str) -> str:
        """Path of one run's reject file, relative to the bucket (S3) or absolute (local)."""
        relative = f"{_check_safe('model', model)}/{day}/{_check_safe('run id', run_id)}.jsonl"
        if self.is_s3:
            _, prefix = self.bucket_and_prefix()
            return f"{prefix}/{relative}" if prefix else relative
        return str(Path(self.url) / relative)

    def display(self, model: str, day: str, run_id: str) -> str:
        if self.is_s3:
            bucket, _ = self.bucket_and_prefix()
            return f"s3://{bucket}/{self.key(model, day, run_id)}"
        return str(Path(self.key(model, day, run_id)).resolve())


def _s3_client() -> Any:
    import boto3

    # boto3 honours AWS_ENDPOINT_URL itself; passing it explicitly keeps older botocore working.
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return boto3.client("s3", endpoint_url=endpoint or None)


def _describe_s3_error(exc: Exception, action: str, where: str) -> RejectsError:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code")
    if code is None:
        # boto3's transfer manager wraps the ClientError: its text carries the S3 code
        # ("An error occurred (NoSuchBucket) when calling the PutObject operation").
        code = f"{type(exc).__name__}: {exc}"
    return RejectsError(f"could not {action} {where}: {code}")


@dataclass
class RejectSink:
    """Collects one run's rejected rows and publishes them as one JSON Lines file."""

    rejects_url: str
    model: str
    object_name: str
    operation: str
    run_id: str
    redact: Iterable[str] = ()
    sse: str | None = None
    # The primary key maps to a redacted field (an e-mail as the key): masked too.
    redact_primary_key: bool = False
    count: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    _spool: Any = None
    _day: str = ""
    _sample: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._location = RejectLocation(self.rejects_url)
        self._day = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
        self._location.key(self.model, self._day, self.run_id)  # validates names early
        self._redact = set(self.redact)
        # Kept open for the whole run; closed and removed by discard().
        self._spool = tempfile.NamedTemporaryFile(  # noqa: SIM115
            "w+", encoding="utf-8", suffix=".jsonl", prefix=f"rejects-{self.model}-", delete=False
        )

    @property
    def url(self) -> str:
        return self._location.display(self.model, self._day, self.run_id)

    def add(
        self,
        *,
        primary_key: str | None,
        record: dict[str, Any],
        error_code: str,
        message: str,
        transport: str,
        fields: list[str] | None = None,
        attempts: int = 0,
    ) -> None:
        masked = {
            k: (REDACTED if k in self._redact and v is not None else v) for k, v in record.items()
        }
        # Salesforce echoes values in messages ("data value too large: <value>"): mask them
        # there too, or a redacted field would leak through the message.
        for k in self._redact:
            value = record.get(k)
            if value is not None and str(value) and str(value) in message:
                message = message.replace(str(value), REDACTED)
            elif value is None and k in record:
                # A value refused while coercing is not in the record (it is null there) but
                # its start is in the message: mask every value such a message echoes.
                message = _ECHOED_VALUE.sub(rf"\1{REDACTED}\2", message)
        # Salesforce echoes values in its messages ("invalid email address: …"): mask them too.
        for name in self._redact:
            value = record.get(name)
            if value is not None and str(value):
                message = message.replace(str(value), REDACTED)
        line = {
            "run_id": self.run_id,
            "model": self.model,
            "object": self.object_name,
            "operation": self.operation,
            "transport": transport,
            "primary_key": (
                REDACTED if self.redact_primary_key and primary_key is not None else primary_key
            ),
            "record": masked,
            "error_code": error_code,
            "message": message,
            "fields": list(fields or []),
            "attempts": attempts,
            "rejected_at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        }
        kill_point("rejects_write")  # test hook
        # ensure_ascii=False keeps emoji and right-to-left text readable; json escapes NULs.
        self._spool.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")
        self.count += 1
        self.codes[error_code] += 1
        if len(self._sample) < 20:
            self._sample.append(line)

    @property
    def sample(self) -> list[dict[str, Any]]:
        return list(self._sample)

    def publish(self) -> str | None:
        """Upload the reject file (only when there are rejects); returns its URL."""
        self._spool.flush()
        if self.count == 0:
            return None
        key = self._location.key(self.model, self._day, self.run_id)
        kill_point("rejects_publish")  # test hook
        if self._location.is_s3:
            bucket, _ = self._location.bucket_and_prefix()
            extra: dict[str, Any] = {"ContentType": "application/x-ndjson"}
            if self.sse:
                extra["ServerSideEncryption"] = self.sse
            try:
                _s3_client().upload_file(self._spool.name, bucket, key, ExtraArgs=extra)
            except Exception as exc:  # boto3 raises several families; all mean "not written"
                raise _describe_s3_error(exc, "write rejects to", self.url) from exc
        else:
            target = Path(key)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_suffix(".jsonl.tmp")
                shutil.copyfile(self._spool.name, tmp)
                os.replace(tmp, target)
            except OSError as exc:
                raise RejectsError(f"could not write rejects to {target}: {exc.strerror}") from exc
        return self.url

    def discard(self) -> None:
        self._spool.close()
        Path(self._spool.name).unlink(missing_ok=True)


def check_rejects_writable(rejects_url: str, model: str, run_id: str, *, sse: str | None) -> None:
    """Prove the rejects store takes a write before anything is sent (a run that could
    not record its rejects would have to be failed after sending)."""
    location = RejectLocation(rejects_url)
    probe_day = ".write-check"
    key = location.key(model, probe_day, run_id)
    try:
        if location.is_s3:
            bucket, _ = location.bucket_and_prefix()
            extra: dict[str, Any] = {"ServerSideEncryption": sse} if sse else {}
            client = _s3_client()
            client.put_object(Bucket=bucket, Key=key, Body=b"", **extra)
            client.delete_object(Bucket=bucket, Key=key)
            return
        target = Path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"")
        target.unlink()
        with contextlib.suppress(OSError):
            target.parent.rmdir()
    except OSError as exc:
        raise RejectsError(
            f"rejects store {rejects_url} is not writable ({exc.strerror or exc}); nothing was "
            "sent. Fix its permissions or point SF_ACTIVATION_REJECTS_URL elsewhere"
        ) from None
    except Exception as exc:  # botocore's families
        raise _describe_s3_error(exc, "write a test object to", rejects_url) from None


@dataclass(frozen=True)
class RejectFile:
    model: str
    day: str
    run_id: str
    url: str


def list_reject_files(rejects_url: str, model: str) -> list[RejectFile]:
    """Every reject file of a model, oldest first."""
    location = RejectLocation(rejects_url)
    _check_safe("model", model)
    found: list[tuple[str, RejectFile]] = []
    if location.is_s3:
        bucket, prefix = location.bucket_and_prefix()
        model_prefix = f"{prefix}/{model}/" if prefix else f"{model}/"
        try:
            pages = (
                _s3_client()
                .get_paginator("list_objects_v2")
                .paginate(Bucket=bucket, Prefix=model_prefix)
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    parts = obj["Key"][len(model_prefix) :].split("/")
                    if len(parts) == 2 and parts[1].endswith(".jsonl"):
                        run_id = parts[1].removesuffix(".jsonl")
                        sort_key = f"{parts[0]}/{obj['LastModified'].isoformat()}"
                        url = f"s3://{bucket}/{obj['Key']}"
                        found.append((sort_key, RejectFile(model, parts[0], run_id, url)))
        except Exception as exc:
            raise _describe_s3_error(
                exc, "list rejects in", f"s3://{bucket}/{model_prefix}"
            ) from exc
    else:
        root = Path(rejects_url) / model
        for path in root.glob("*/*.jsonl"):
            sort_key = f"{path.parent.name}/{path.stat().st_mtime:020.6f}"
            found.append(
                (sort_key, RejectFile(model, path.parent.name, path.stem, str(path.resolve())))
            )
    return [f for _, f in sorted(found, key=lambda pair: pair[0])]


def _read_lines(url: str) -> Iterator[dict[str, Any]]:
    if url.startswith("s3://"):
        parsed = urlparse(url)
        try:
            body = _s3_client().get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))[
                "Body"
            ]
        except Exception as exc:
            raise _describe_s3_error(exc, "read rejects from", url) from exc
        for raw in body.iter_lines():
            if raw.strip():
                yield json.loads(raw)
    else:
        with open(url, encoding="utf-8") as handle:
            for raw in handle:
                if raw.strip():
                    yield json.loads(raw)


def read_rejects(
    rejects_url: str, model: str, run_id: str | None = None, limit: int | None = None
) -> tuple[RejectFile | None, list[dict[str, Any]]]:
    """The rejected rows of one run (the latest when run_id is None)."""
    files = list_reject_files(rejects_url, model)
    if run_id is not None:
        files = [f for f in files if f.run_id == run_id]
        if not files:
            raise RejectsError(f"no rejects recorded for model {model!r} in run {run_id!r}")
    if not files:
        return None, []
    chosen = files[-1]
    rows: list[dict[str, Any]] = []
    for row in _read_lines(chosen.url):
        rows.append(row)
        if limit is not None and len(rows) >= limit:
            break
    return chosen, rows
