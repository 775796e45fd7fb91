"""Settings read from the environment (the variables the README lists)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

MEMORY_PATTERN = r"^[0-9]+(\.[0-9]+)?(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$"
DEFAULT_WAREHOUSE_URL = "duckdb:///.sf_activation/warehouse.duckdb"
DEFAULT_MODELS_DIR = "models"
DEFAULT_STATE_URL = ".sf_activation/state"
DEFAULT_REJECTS_URL = ".sf_activation/rejects"
DEFAULT_LOGIN_URL = "https://login.salesforce.com"
DEFAULT_API_VERSION = "62.0"
DEFAULT_COMPACT_RATIO = 0.1


class SettingsError(ValueError):
    """An environment variable that cannot work, in one line naming it and the form it
    takes. A ValueError, so callers catching that keep working; the command prints it
    without a class name and exits 2 (bad usage), before anything is read or sent."""


class SalesforceSettings(BaseModel):
    """How to reach and authenticate against one Salesforce org.

    The auth flow is chosen by which variables are set: a ready session (instance URL +
    access token), refresh token, JWT bearer (username + private key file), password, or
    client credentials (client id + secret alone, on a My Domain login URL).
    """

    model_config = ConfigDict(frozen=True)

    instance_url: str | None = None
    access_token: SecretStr | None = None
    login_url: str = DEFAULT_LOGIN_URL
    client_id: str | None = None
    client_secret: SecretStr | None = None
    refresh_token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    security_token: SecretStr | None = None
    private_key_file: Path | None = None
    api_version: str = DEFAULT_API_VERSION
    ca_bundle: Path | None = None
    # Stop a run cleanly before it spends more than this share of the org's daily API calls.
    max_api_usage_share: float = 0.8
    # Seconds to wait for an answer. Bulk result downloads and 200-record writes on a busy
    # org can take minutes; a create that times out is reconciled, never sent again blindly.
    read_timeout_s: float = Field(default=300.0, gt=0)

    @field_validator("api_version")
    @classmethod
    def _api_version_is_numeric(cls, value: str) -> str:
        value = value.removeprefix("v")
        try:
            float(value)
        except ValueError as exc:
            raise ValueError(f"SALESFORCE_API_VERSION must look like 62.0, got {value!r}") from exc
        return value

    @property
    def auth_flow(self) -> str:
        """Name of the flow these settings select, for messages and metadata."""
        if self.refresh_token is not None:
            return "refresh_token"
        if self.username and self.private_key_file:
            return "jwt_bearer"
        if self.username and self.password is not None:
            return "password"
        if self.client_id and self.client_secret is not None:
            return "client_credentials"
        if self.instance_url and self.access_token is not None:
            return "access_token"
        return "none"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SalesforceSettings:
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name)
            return value if value else None

        values = {
            "instance_url": get("SALESFORCE_INSTANCE_URL"),
            "access_token": get("SALESFORCE_ACCESS_TOKEN"),
            "login_url": get("SALESFORCE_LOGIN_URL") or DEFAULT_LOGIN_URL,
            "client_id": get("SALESFORCE_CLIENT_ID"),
            "client_secret": get("SALESFORCE_CLIENT_SECRET"),
            "refresh_token": get("SALESFORCE_REFRESH_TOKEN"),
            "username": get("SALESFORCE_USERNAME"),
            "password": get("SALESFORCE_PASSWORD"),
            "security_token": get("SALESFORCE_SECURITY_TOKEN"),
            "private_key_file": get("SALESFORCE_PRIVATE_KEY_FILE"),
            "api_version": get("SALESFORCE_API_VERSION") or DEFAULT_API_VERSION,
            "ca_bundle": get("SALESFORCE_CA_BUNDLE"),
        }
        _check_api_version(values["api_version"])
        _check_instance_url(values["instance_url"], "SALESFORCE_INSTANCE_URL")
        timeout = get("SALESFORCE_READ_TIMEOUT_S")
        if timeout is not None:
            values["read_timeout_s"] = _number(
                get, "SALESFORCE_READ_TIMEOUT_S", 300.0, float, above=0.0
            )
        # Range-checked here: a share of 0 or below would stop every run before its first
        # call and exit 0, a silent no-op on every schedule.
        share = get("SF_ACTIVATION_MAX_API_USAGE")
        if share is not None:
            values["max_api_usage_share"] = _number(
                get, "SF_ACTIVATION_MAX_API_USAGE", 0.8, float, above=0.0, at_most=1.0
            )
        return cls(**{k: v for k, v in values.items() if v is not None})


class Settings(BaseModel):
    """Everything a sync run reads from the environment."""

    model_config = ConfigDict(frozen=True)

    warehouse_url: SecretStr = SecretStr(DEFAULT_WAREHOUSE_URL)
    models_dir: Path = Path(DEFAULT_MODELS_DIR)
    state_url: str = DEFAULT_STATE_URL
    rejects_url: str = DEFAULT_REJECTS_URL
    rejects_sse: str | None = None  # S3 server-side encryption: AES256 or aws:kms
    dbt_target_dir: Path | None = None
    # Mirror runs may delete more than max_delete_rate (a deliberate clean-up).
    allow_deletes: bool = False
    # An insert model without state may create records Salesforce already holds
    # (sf_activation/insert_baseline.py): a deliberate re-load.
    allow_reinsert: bool = False
    # Confirmed rows buffered before a durable state commit (insert always commits per call):
    # what a killed run may re-send, traded against one Parquet write per Composite call.
    commit_rows: int = 2_000
    # The per-model lease (sf_activation/lease.py): how long a second run of a model waits
    # for the first before refusing, and how long a dead holder's lease lasts.
    lease_wait_s: float = Field(default=0.0, ge=0)
    lease_ttl_s: float = Field(default=120.0, gt=0)
    # Models writing one Salesforce object send one at a time (they contend for the same
    # records' and parents' locks): how long a send waits for another model's send.
    object_wait_s: float = Field(default=3600.0, ge=0)
    # Days of per-run sync logs kept beside the state (0 keeps them all).
    sync_log_days: int = Field(default=30, ge=0)
    # DuckDB's memory while planning, and while sending and folding the state (the plan
    # and the state are on disk and read in order). Beyond it DuckDB spills to the run's
    # work directory; a value in DuckDB's units ("512MB", "2GB").
    plan_memory: str = Field(default="1GB", pattern=MEMORY_PATTERN)
    send_memory: str = Field(default="512MB", pattern=MEMORY_PATTERN)
    # A create whose answer was lost and that Salesforce does not hold is sent again only
    # this long after it was sent: Salesforce ends a request within 10 minutes.
    unknown_outcome_grace_s: float = Field(default=900.0, ge=0)
    # Strengthens the digest a model whose primary key is redacted keeps in state instead
    # of the key (docs/internals.md); the same on every worker, never shown.
    state_key: SecretStr | None = None
    # Days a run record and its request log are kept beside the state (`run_history`).
    run_history_days: float = Field(default=30.0, gt=0)
    # The state's snapshot is rewritten once the commits beside it hold this share of its
    # rows (state.StateStore.compact; 0: after every run).
    compact_ratio: float = Field(default=DEFAULT_COMPACT_RATIO, ge=0, le=1)
    # The schema (BigQuery: dataset) the warehouse diff engine may create its tables in;
    # set, models diff in the warehouse unless their file says `diff: local`.
    warehouse_state_schema: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_$]*$")
    salesforce: SalesforceSettings = SalesforceSettings()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def get(name: str, default: str | None = None) -> str | None:
            return env.get(name) or default

        return cls(
            warehouse_url=SecretStr(get("SF_ACTIVATION_WAREHOUSE_URL", DEFAULT_WAREHOUSE_URL)),
            models_dir=Path(get("SF_ACTIVATION_MODELS_DIR", DEFAULT_MODELS_DIR)),
            state_url=get("SF_ACTIVATION_STATE_URL", DEFAULT_STATE_URL),
            rejects_url=get("SF_ACTIVATION_REJECTS_URL", DEFAULT_REJECTS_URL),
            rejects_sse=get("SF_ACTIVATION_REJECTS_SSE"),
            dbt_target_dir=get("SF_ACTIVATION_DBT_TARGET_DIR"),
            allow_deletes=(get("SF_ACTIVATION_ALLOW_DELETES", "") or "").lower()
            in ("1", "true", "yes"),
            allow_reinsert=(get("SF_ACTIVATION_ALLOW_REINSERT", "") or "").lower()
            in ("1", "true", "yes"),
            commit_rows=_number(get, "SF_ACTIVATION_COMMIT_ROWS", 2000, int, at_least=1),
            lease_wait_s=_number(get, "SF_ACTIVATION_LEASE_WAIT_S", 0.0, float, at_least=0),
            lease_ttl_s=_number(get, "SF_ACTIVATION_LEASE_TTL_S", 120.0, float, above=0),
            object_wait_s=_number(get, "SF_ACTIVATION_OBJECT_WAIT_S", 3600.0, float, at_least=0),
            sync_log_days=_number(get, "SF_ACTIVATION_SYNC_LOG_DAYS", 30, int, at_least=0),
            plan_memory=_memory(get, "SF_ACTIVATION_PLAN_MEMORY", "1GB"),
            send_memory=_memory(get, "SF_ACTIVATION_SEND_MEMORY", "512MB"),
            unknown_outcome_grace_s=_number(
                get, "SF_ACTIVATION_UNKNOWN_OUTCOME_GRACE_S", 900.0, float, at_least=0
            ),
            state_key=state_key_from_env(env),
            run_history_days=_number(get, "SF_ACTIVATION_RUN_HISTORY_DAYS", 30.0, float),
            compact_ratio=compact_ratio_from_env(env),
            warehouse_state_schema=_identifier(get, "SF_ACTIVATION_WAREHOUSE_STATE_SCHEMA"),
            salesforce=SalesforceSettings.from_env(env),
        )


def state_key_from_env(environ: Mapping[str, str] | None = None) -> SecretStr | None:
    """SF_ACTIVATION_STATE_KEY: the secret mixed into the digests of redacted primary keys
    kept in state (None when unset)."""
    env = os.environ if environ is None else environ
    value = env.get("SF_ACTIVATION_STATE_KEY")
    return SecretStr(value) if value else None


def compact_ratio_from_env(environ: Mapping[str, str] | None = None) -> float:
    """SF_ACTIVATION_COMPACT_RATIO: the share of the snapshot's rows the unfolded commits
    reach before compaction rewrites the snapshot (0 to 1; 0 rewrites it after every run)."""
    env = os.environ if environ is None else environ

    def get(name: str, default: str | None = None) -> str | None:
        return env.get(name) or default

    return _number(
        get,
        "SF_ACTIVATION_COMPACT_RATIO",
        DEFAULT_COMPACT_RATIO,
        float,
        at_least=0.0,
        at_most=1.0,
    )


def _memory(get: Callable[..., str | None], name: str, default: str) -> str:
    raw = (get(name) or default).strip().replace(" ", "")
    if not re.fullmatch(MEMORY_PATTERN, raw):
        raise SettingsError(
            f"{name}={raw!r} is not a memory size: write it as DuckDB does, e.g. 512MB or 2GB "
            f"(default {default})"
        )
    return raw


def _identifier(get: Callable[..., str | None], name: str) -> str | None:
    raw = (get(name) or "").strip()
    if not raw:
        return None
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", raw):
        raise SettingsError(
            f"{name}={raw!r} is not a plain schema name: letters, digits and _ only, "
            "starting with a letter or _ (the schema, or BigQuery dataset, the warehouse "
            "diff engine may write)"
        )
    return raw


def _number(
    get: Callable[..., str | None],
    name: str,
    default: float,
    kind: type,
    *,
    at_least: float | None = None,
    above: float | None = None,
    at_most: float | None = None,
) -> Any:
    """The variable as `kind`, range-checked at start-up: a value out of range fails the
    command in one line naming the variable, rather than a run that quietly does nothing."""
    raw = get(name)
    if raw is None:
        return default
    form = "a whole number" if kind is int else "a number"
    bounds = []
    if at_least is not None:
        bounds.append(f">= {at_least:g}")
    if above is not None:
        bounds.append(f"> {above:g}")
    if at_most is not None:
        bounds.append(f"<= {at_most:g}")
    expected = form + (f" {' and '.join(bounds)}" if bounds else "")
    try:
        value = kind(raw.strip())
    except ValueError:
        raise SettingsError(
            f"{name}={raw!r} is not {form}: expected {expected} (default {default:g})"
        ) from None
    if (
        value != value  # NaN passes no comparison: refuse it like any value out of range
        or (at_least is not None and value < at_least)
        or (above is not None and value <= above)
        or (at_most is not None and value > at_most)
    ):
        raise SettingsError(
            f"{name}={raw!r} is out of range: expected {expected} (default {default:g})"
        )
    return value


def _check_api_version(value: str) -> None:
    """SALESFORCE_API_VERSION as `62.0` (or `v62.0`), said in one line before pydantic's
    multi-line dump could."""
    if not re.fullmatch(r"v?[0-9]+(\.[0-9]+)?", value):
        raise SettingsError(
            f"SALESFORCE_API_VERSION={value!r} is not an API version: expected a number "
            f"such as {DEFAULT_API_VERSION} (default {DEFAULT_API_VERSION})"
        )


def _check_instance_url(value: str | None, name: str) -> None:
    """The instance root (https://acme.my.salesforce.com): a URL copied with its REST path
    (…/services/data/v62.0) would otherwise be read as an org without the model's object."""
    if not value:
        return
    from urllib.parse import urlparse

    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise SettingsError(
            f"{name}={value!r} is not a URL: expected the instance root, "
            "e.g. https://acme.my.salesforce.com"
        )
    if parsed.path.rstrip("/") or parsed.query:
        root = f"{parsed.scheme}://{parsed.netloc}"
        raise SettingsError(
            f"{name}={value!r} has a path: it should be the instance root ({root}), "
            "without /services/data/…"
        )
