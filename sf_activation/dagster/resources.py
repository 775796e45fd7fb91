"""Dagster resources: the settings of DESIGN.md as ConfigurableResources.

Every value that can be secret reaches Dagster as `dg.EnvVar("NAME")`, which the UI shows
by name and never by value. A variable unset when the code location loads stays `None`
and is read from the run's environment when the step starts, so `dagster definitions
validate` works on a machine with no SALESFORCE_* set, and a run worker configured
differently from the code server still finds its credentials.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg

from sf_activation.config import Settings

# Field name -> environment variable, in the order the UI lists them.
SALESFORCE_VARIABLES: dict[str, str] = {
    "instance_url": "SALESFORCE_INSTANCE_URL",
    "access_token": "SALESFORCE_ACCESS_TOKEN",
    "login_url": "SALESFORCE_LOGIN_URL",
    "client_id": "SALESFORCE_CLIENT_ID",
    "client_secret": "SALESFORCE_CLIENT_SECRET",
    "refresh_token": "SALESFORCE_REFRESH_TOKEN",
    "username": "SALESFORCE_USERNAME",
    "password": "SALESFORCE_PASSWORD",
    "security_token": "SALESFORCE_SECURITY_TOKEN",
    "private_key_file": "SALESFORCE_PRIVATE_KEY_FILE",
    "api_version": "SALESFORCE_API_VERSION",
    "ca_bundle": "SALESFORCE_CA_BUNDLE",
    "max_api_usage_share": "SF_ACTIVATION_MAX_API_USAGE",
}

SYNC_VARIABLES: dict[str, str] = {
    "warehouse_url": "SF_ACTIVATION_WAREHOUSE_URL",
    "models_dir": "SF_ACTIVATION_MODELS_DIR",
    "state_url": "SF_ACTIVATION_STATE_URL",
    "rejects_url": "SF_ACTIVATION_REJECTS_URL",
    "rejects_sse": "SF_ACTIVATION_REJECTS_SSE",
}


def _overlay(fields: Mapping[str, str | None], names: Mapping[str, str]) -> dict[str, str]:
    """The run's environment with the resource's configured values on top."""
    env = dict(os.environ)
    for field, variable in names.items():
        value = fields.get(field)
        if value:
            env[variable] = value
    return env


class SalesforceResource(dg.ConfigurableResource):
    """How to reach the Salesforce org. Configure with `dg.EnvVar`; unset fields are read
    from the environment at run time (the same variables `sf-activation` reads)."""

    instance_url: str | None = None
    access_token: str | None = None
    login_url: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    refresh_token: str | None = None
    username: str | None = None
    password: str | None = None
    security_token: str | None = None
    private_key_file: str | None = None
    api_version: str | None = None
    ca_bundle: str | None = None
    max_api_usage_share: str | None = None

    def environment(self) -> dict[str, str]:
        return _overlay({f: getattr(self, f) for f in SALESFORCE_VARIABLES}, SALESFORCE_VARIABLES)


class SyncSettingsResource(dg.ConfigurableResource):
    """Where the warehouse, the models, the sync state and the reject files are."""

    warehouse_url: str | None = None
    models_dir: str | None = None
    state_url: str | None = None
    rejects_url: str | None = None
    rejects_sse: str | None = None

    def environment(self) -> dict[str, str]:
        return _overlay({f: getattr(self, f) for f in SYNC_VARIABLES}, SYNC_VARIABLES)


def build_settings(salesforce: SalesforceResource, sync: SyncSettingsResource) -> Settings:
    """The engine's Settings, built at run time from both resources and the environment."""
    env = salesforce.environment()
    env.update(sync.environment())
    return Settings.from_env(env)


def _env_or_none(variable: str, environ: Mapping[str, str]) -> dg.EnvVar | None:
    # EnvVar of an unset variable fails the launch; leave it to the run-time fallback.
    return dg.EnvVar(variable) if environ.get(variable) else None


def resources_from_env(
    environ: Mapping[str, str] | None = None,
) -> dict[str, dg.ConfigurableResource]:
    """The resources the definitions bind: an EnvVar for every variable set at load time."""
    env = os.environ if environ is None else environ
    return {
        "salesforce": SalesforceResource(
            **{f: _env_or_none(v, env) for f, v in SALESFORCE_VARIABLES.items()}
        ),
        "sync_settings": SyncSettingsResource(
            **{f: _env_or_none(v, env) for f, v in SYNC_VARIABLES.items()}
        ),
    }
