"""sObject Collections: `composite/sobjects` create, update, upsert, delete, retrieve.

One request is one API call for up to 200 records; results come back in request order
with HTTP 200 even when items fail. Whole-request problems (bad JSON, too many records,
an unknown object or field) are answered with a top-level error array instead.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sf_activation.emulator import ids
from sf_activation.emulator.context import Context
from sf_activation.emulator.org import ROLLED_BACK
from sf_activation.emulator.responses import ApiError, json_response, read_json
from sf_activation.emulator.rest import api, api_record, require_schema
from sf_activation.emulator.schema import ObjectSchema, RecordError

MAX_RECORDS = 200
_LIMIT_MESSAGE = "record limit reached. cannot submit more than 200 records into this call"
UNSUPPORTED_TYPE = (
    "sObject type '{name}' is not supported. If you are attempting to use a custom object, "
    "be sure to append the '__c' after the entity name. Please reference your WSDL or the "
    "describe call for the appropriate names."
)


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def _unknown_field(schema: ObjectSchema, record: dict[str, Any]) -> str | None:
    for key, value in record.items():
        if key == "attributes" or schema.fields.get(key) is not None:
            continue
        if schema.by_lower.get(key.lower()) is not None:
            continue
        if isinstance(value, dict) and key.lower() in schema.relationships:
            continue
        return key
    return None


def _parse_records(body: Any) -> tuple[list[dict[str, Any]], bool]:
    if not isinstance(body, dict):
        raise ApiError(
            400,
            "JSON_PARSER_ERROR",
            "Cannot deserialize instance of SObjectCollectionRequest from a non-object",
        )
    records = body.get("records")
    if records is None:
        raise ApiError(400, "INVALID_FIELD", "records: must not be null")
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ApiError(
            400, "JSON_PARSER_ERROR", "records: expected an array of sObjects at [line:1]"
        )
    if len(records) > MAX_RECORDS:
        raise ApiError(400, "EXCEEDED_ID_LIMIT", _LIMIT_MESSAGE)
    return records, _flag(body.get("allOrNone", False))


def _typed(ctx: Context, records: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(object, record) for each record, from its `attributes.type`; unknowns refused whole."""
    items = []
    schemas: dict[str, ObjectSchema] = {}
    for record in records:
        attributes = record.get("attributes")
        type_name = attributes.get("type") if isinstance(attributes, dict) else None
        if not isinstance(type_name, str) or not type_name:
            raise ApiError(
                400, "INVALID_TYPE", "Must specify a type in the attributes field of each record"
            )
        schema = schemas.get(type_name) or ctx.org.schema(type_name)
        if schema is None:
            raise ApiError(400, "INVALID_TYPE", UNSUPPORTED_TYPE.format(name=type_name))
        schemas[type_name] = schema
        unknown = _unknown_field(schema, record)
        if unknown is not None:
            raise ApiError(
                400, "INVALID_FIELD", f"No such column '{unknown}' on sobject of type {schema.name}"
            )
        items.append((schema.name, record))
    return items


def collection_routes(ctx: Context) -> list[Route]:
    org = ctx.org

    async def create_or_update(request: Request) -> Response:
        records, all_or_none = _parse_records(await read_json(request))
        items = _typed(ctx, records)
        operation = "insert" if request.method == "POST" else "update"
        return json_response(org.apply_mixed(operation, items, all_or_none=all_or_none))

    async def delete(request: Request) -> Response:
        raw_ids = [i for i in request.query_params.get("ids", "").split(",") if i.strip()]
        if not raw_ids:
            raise ApiError(400, "MISSING_ARGUMENT", "ids: must not be null")
        if len(raw_ids) > MAX_RECORDS:
            raise ApiError(400, "EXCEEDED_ID_LIMIT", _LIMIT_MESSAGE)
        all_or_none = _flag(request.query_params.get("allOrNone", "false"))
        results: list[dict[str, Any] | None] = []
        items: list[tuple[str, dict[str, Any]]] = []
        for raw in raw_ids:
            raw = raw.strip()
            rid = ids.normalize(raw)
            object_name = org.object_for_id(rid) if rid else None
            if object_name is None:
                error = RecordError("MALFORMED_ID", f"malformed id {raw}")
                results.append({"success": False, "errors": [error.as_dict()]})
            else:
                results.append(None)
                items.append((object_name, {"Id": rid}))
        failed_early = any(r is not None for r in results)
        if failed_early and all_or_none:
            rolled = {"success": False, "errors": [ROLLED_BACK.as_dict()]}
            return json_response([r if r is not None else rolled for r in results])
        applied = iter(org.apply_mixed("delete", items, all_or_none=all_or_none))
        return json_response([r if r is not None else next(applied) for r in results])

    async def upsert(request: Request) -> Response:
        schema = require_schema(ctx, request.path_params["object"])
        field_name = request.path_params["field"]
        f = schema.field(field_name)
        if f is None:
            raise ApiError(
                404,
                "NOT_FOUND",
                f"Provided external ID field does not exist or is not accessible: {field_name}",
            )
        if not (f.id_lookup or f.type == "id"):
            raise ApiError(
                400,
                "INVALID_FIELD",
                f"Field {f.name} is not an External ID or indexed field for {schema.name}",
            )
        records, all_or_none = _parse_records(await read_json(request))
        for record in records:
            attributes = record.get("attributes")
            type_name = attributes.get("type") if isinstance(attributes, dict) else None
            if type_name is not None and str(type_name).lower() != schema.name.lower():
                raise ApiError(
                    400,
                    "INVALID_TYPE",
                    f"Upsert of {type_name} records is not allowed on {schema.name}",
                )
            unknown = _unknown_field(schema, record)
            if unknown is not None:
                raise ApiError(
                    400,
                    "INVALID_FIELD",
                    f"No such column '{unknown}' on sobject of type {schema.name}",
                )
        return json_response(
            org.apply(
                schema.name,
                "upsert",
                records,
                external_id_field=f.name,
                all_or_none=all_or_none,
            )
        )

    async def retrieve(request: Request) -> Response:
        schema = require_schema(ctx, request.path_params["object"])
        version = request.path_params["version"]
        if request.method == "POST":
            body = await read_json(request)
            if not isinstance(body, dict):
                raise ApiError(400, "JSON_PARSER_ERROR", "Cannot deserialize request body")
            wanted_ids = [str(i) for i in body.get("ids") or []]
            fields = [str(f) for f in body.get("fields") or []]
        else:
            wanted_ids = [i for i in request.query_params.get("ids", "").split(",") if i]
            fields = [f for f in request.query_params.get("fields", "").split(",") if f]
        if not fields:
            raise ApiError(400, "MISSING_ARGUMENT", "fields: must not be null")
        if len(wanted_ids) > 2000:
            raise ApiError(400, "EXCEEDED_ID_LIMIT", "record limit reached")
        out: list[dict[str, Any] | None] = []
        for raw in wanted_ids:
            record = org.get(schema.name, raw) if ids.normalize(raw) else None
            out.append(api_record(schema, record, version, fields) if record else None)
        return json_response(out)

    return [
        *api("/composite/sobjects", create_or_update, ["POST", "PATCH"]),
        *api("/composite/sobjects", delete, ["DELETE"]),
        *api("/composite/sobjects/{object}", retrieve, ["GET", "POST"]),
        *api("/composite/sobjects/{object}/{field}", upsert, ["PATCH"]),
    ]
