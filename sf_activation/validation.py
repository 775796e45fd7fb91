"""`sf-activation validate`: every model against its warehouse columns and Salesforce describe."""

from __future__ import annotations

from typing import Any

from sf_activation.config import Settings
from sf_activation.field_behaviours import check_describe
from sf_activation.models import ModelError, check_columns, load_model
from sf_activation.record_types import write_switches
from sf_activation.salesforce.client import SalesforceClient
from sf_activation.salesforce.describe import validate_mapping
from sf_activation.salesforce.errors import SalesforceError
from sf_activation.warehouse import Warehouse, WarehouseError


def validate_models(
    settings: Settings,
    only: list[str] | None = None,
    client: SalesforceClient | None = None,
) -> list[dict[str, Any]]:
    """One result per model file: {"model", "ok", "message"}. Stops at nothing: every file
    gets its own verdict, so one broken model does not hide the others."""
    paths = sorted(settings.models_dir.glob("*.yml")) + sorted(settings.models_dir.glob("*.yaml"))
    if only:
        paths = [p for p in paths if p.stem in set(only)]
        missing = set(only) - {p.stem for p in paths}
        results = [
            {"model": name, "ok": False, "message": f"no model file {name}.yml"}
            for name in sorted(missing)
        ]
    else:
        results = []
    if not paths and not results:
        return [
            {
                "model": "-",
                "ok": False,
                "message": f"no model files in {settings.models_dir} (SF_ACTIVATION_MODELS_DIR)",
            }
        ]
    client = client or SalesforceClient.from_settings(settings.salesforce)
    with Warehouse.from_url(settings.warehouse_url.get_secret_value()) as warehouse:
        for path in paths:
            try:
                spec = load_model(path)
                check_columns(spec, warehouse.columns(spec.sql_text))
                validate_mapping(
                    model=spec.name,
                    describe=client.describe(spec.object),
                    operation=spec.write_operation,
                    field_map=spec.fields,
                    external_id=spec.external_id,
                    parent_describe=client.describe,
                )
                check_describe(spec, client.describe(spec.object))  # set_if_empty
                write_switches(spec, client)  # record_type names an active record type
            except (ModelError, WarehouseError, SalesforceError) as exc:
                results.append({"model": path.stem, "ok": False, "message": str(exc)})
                continue
            results.append(
                {
                    "model": spec.name,
                    "ok": True,
                    "message": f"{spec.operation} {spec.object}: {len(spec.fields)} fields mapped",
                }
            )
    return results
