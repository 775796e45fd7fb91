"""REST resources: versions, limits, describes, single-record sObject calls, query."""

from __future__ import annotations

import itertools
import secrets
from collections import OrderedDict
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sf_activation.emulator import ids
from sf_activation.emulator.context import API_VERSIONS, Context
from sf_activation.emulator.org import UnknownObjectError
from sf_activation.emulator.responses import (
    ApiError,
    error_response,
    json_response,
    not_found,
    read_json,
)
from sf_activation.emulator.schema import ObjectSchema

GLOBAL_KEYS = (
    "activateable",
    "associateEntityType",
    "associateParentEntity",
    "createable",
    "custom",
    "customSetting",
    "deepCloneable",
    "deletable",
    "deprecatedAndHidden",
    "feedEnabled",
    "hasSubtypes",
    "isInterface",
    "isSubtype",
    "keyPrefix",
    "label",
    "labelPlural",
    "layoutable",
    "mergeable",
    "mruEnabled",
    "name",
    "queryable",
    "replicateable",
    "retrieveable",
    "searchable",
    "triggerable",
    "undeletable",
    "updateable",
)
DEFAULT_QUERY_BATCH = 2000
# sobjects/{X}/{name}/... paths that are resources, never an external id field name.
SOBJECT_SUBRESOURCES = frozenset(
    {"describe", "listviews", "quickactions", "updated", "deleted", "layouts", "defaultvalues"}
)
API_PREFIX = "/services/data/v{version}"
_MAX_CURSORS = 200


def with_slash(path: str, endpoint: Any, methods: list[str]) -> list[Route]:
    """The route with and without a trailing slash: clients use both, real orgs accept both."""
    return [Route(path, endpoint, methods=methods), Route(path + "/", endpoint, methods=methods)]


def api(path: str, endpoint: Any, methods: list[str]) -> list[Route]:
    """A versioned API route (`/services/data/vXX.X` + path), with and without a slash."""
    return with_slash(API_PREFIX + path, endpoint, methods)


def object_urls(name: str, version: str) -> dict[str, str]:
    base = f"/services/data/v{version}/sobjects/{name}"
    return {
        "compactLayouts": f"{base}/describe/compactLayouts",
        "rowTemplate": f"{base}/{{ID}}",
        "approvalLayouts": f"{base}/describe/approvalLayouts",
        "defaultValues": f"{base}/defaultValues?recordTypeId&fields",
        "listviews": f"{base}/listviews",
        "describe": f"{base}/describe",
        "quickActions": f"{base}/quickActions",
        "layouts": f"{base}/describe/layouts",
        "sobject": base,
    }


def require_schema(ctx: Context, name: str) -> ObjectSchema:
    schema = ctx.org.schema(name)
    if schema is None:
        raise not_found()
    return schema


def record_url(version: str, object_name: str, record_id: str) -> str:
    return f"/services/data/v{version}/sobjects/{object_name}/{record_id}"


def api_record(
    schema: ObjectSchema, record: dict[str, Any], version: str, only: list[str] | None = None
) -> dict[str, Any]:
    """A stored record as GET sobjects/{X}/{Id} returns it: every field, in describe order."""
    out: dict[str, Any] = {
        "attributes": {
            "type": schema.name,
            "url": record_url(version, schema.name, record["Id"]),
        }
    }
    names = [f.name for f in schema.fields.values()] if only is None else only
    for name in names:
        f = schema.field(name)
        if f is None:
            raise ApiError(
                400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {schema.name}"
            )
        if f.type == "address":
            prefix = f.name[: -len("Address")]
            parts = {
                "city": record.get(prefix + "City"),
                "country": record.get(prefix + "Country"),
                "geocodeAccuracy": record.get(prefix + "GeocodeAccuracy"),
                "latitude": record.get(prefix + "Latitude"),
                "longitude": record.get(prefix + "Longitude"),
                "postalCode": record.get(prefix + "PostalCode"),
                "state": record.get(prefix + "State"),
                "street": record.get(prefix + "Street"),
            }
            out[f.name] = parts if any(v is not None for v in parts.values()) else None
        else:
            out[f.name] = record.get(f.name)
    return out


def record_error(result: dict[str, Any]) -> Response:
    """A failed single-record write: the first error as a top-level error array."""
    error = result["errors"][0]
    status = 404 if error["statusCode"] == "ENTITY_IS_DELETED" else 400
    return error_response(status, error["statusCode"], error["message"], error["fields"])


def rest_routes(ctx: Context) -> list[Route]:
    """Routes under /services/data/v{version}."""
    org = ctx.org

    async def resources(request: Request) -> Response:
        from sf_activation.emulator.rest_resources import resource_directory

        return json_response(resource_directory(ctx, request.path_params["version"]))

    async def limits(request: Request) -> Response:
        used = ctx.api_calls
        records = sum(org.count(n) for n in org.object_names())
        storage_max = 5
        storage_used = records * 2 // 1024  # Salesforce counts ~2 KB per record
        return json_response(
            {
                "ConcurrentAsyncGetReportInstances": {"Max": 200, "Remaining": 200},
                "DailyApiRequests": {
                    "Max": ctx.daily_api_limit,
                    "Remaining": max(0, ctx.daily_api_limit - used),
                },
                "DailyAsyncApexExecutions": {"Max": 250000, "Remaining": 250000},
                "DailyBulkApiBatches": {
                    "Max": 15000,
                    "Remaining": max(0, 15000 - ctx.bulk_batches),
                },
                "DailyBulkV2QueryFileStorageMB": {"Max": 976562, "Remaining": 976562},
                "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000},
                # Clamped: a full org reports 0 remaining, never a negative amount.
                "DataStorageMB": {
                    "Max": storage_max,
                    "Remaining": max(0, storage_max - storage_used),
                },
                "FileStorageMB": {"Max": 20, "Remaining": 20},
                "SingleEmail": {"Max": 15, "Remaining": 15},
            }
        )

    async def record_count(request: Request) -> Response:
        wanted = request.query_params.get("sObjects")
        names = [n for n in wanted.split(",") if n] if wanted else org.object_names()
        items = []
        for name in names:
            schema = org.schema(name)
            if schema is not None:
                items.append({"count": org.count(schema.name), "name": schema.name})
        return json_response({"sObjects": items})

    async def global_describe(request: Request) -> Response:
        version = request.path_params["version"]
        sobjects = []
        for name in org.object_names():
            describe = org.describe(name) or {}
            summary = {k: describe.get(k) for k in GLOBAL_KEYS}
            summary["urls"] = object_urls(name, version)
            sobjects.append(summary)
        return json_response({"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": sobjects})

    async def describe(request: Request) -> Response:
        schema = require_schema(ctx, request.path_params["object"])
        version = request.path_params["version"]
        return json_response({**schema.describe, "urls": object_urls(schema.name, version)})

    async def sobject_basic(request: Request) -> Response:
        schema = require_schema(ctx, request.path_params["object"])
        version = request.path_params["version"]
        summary = {k: schema.describe.get(k) for k in GLOBAL_KEYS}
        summary["urls"] = object_urls(schema.name, version)
        return json_response({"objectDescribe": summary, "recentItems": []})

    async def create(request: Request) -> Response:
        schema = require_schema(ctx, request.path_params["object"])
        body = await read_json(request)
        if not isinstance(body, dict):
            raise ApiError(400, "JSON_PARSER_ERROR", "Cannot deserialize instance of SObject")
        result = org.apply(schema.name, "insert", [body])[0]
        if not result["success"]:
            return record_error(result)
        return json_response(result, 201)

    def _fields_param(request: Request) -> list[str] | None:
        raw = request.query_params.get("fields")
        return [f.strip() for f in raw.split(",") if f.strip()] if raw else None

    async def by_id(request: Request) -> Response:
        schema = require_schema(ctx, request.path_params["object"])
        version = request.path_params["version"]
        raw_id = request.path_params["record_id"]
        if request.method == "GET" and raw_id == "describe":
            return await describe(request)
        rid = ids.normalize(raw_id)
        if rid is None or rid[:3] != schema.key_prefix:
            if request.method == "GET":
                raise not_found()
            label = schema.fields["Id"].label if "Id" in schema.fields else f"{schema.label} ID"
            raise ApiError(
                400, "MALFORMED_ID", f"{label}: id value of incorrect type: {raw_id}", ["Id"]
            )
        record = org.get(schema.name, rid)
        if record is None:
            if org.is_deleted(schema.name, rid):
                raise ApiError(404, "ENTITY_IS_DELETED", "entity is deleted", [])
            raise not_found()
        if request.method == "GET":
            return json_response(api_record(schema, record, version, _fields_param(request)))
        if request.method == "DELETE":
            result = org.apply(schema.name, "delete", [{"Id": rid}])[0]
            return Response(status_code=204) if result["success"] else record_error(result)
        body = await read_json(request)
        if not isinstance(body, dict):
            raise ApiError(400, "JSON_PARSER_ERROR", "Cannot deserialize instance of SObject")
        result = org.apply(schema.name, "update", [{**body, "Id": rid}])[0]
        return Response(status_code=204) if result["success"] else record_error(result)

    def _ext_field(schema: ObjectSchema, name: str) -> str:
        if name.lower() in SOBJECT_SUBRESOURCES:
            raise not_found()  # e.g. describe/unknown: a resource, not an external id field
        f = schema.field(name)
        if f is None:
            raise ApiError(
                404,
                "NOT_FOUND",
                f"Provided external ID field does not exist or is not accessible: {name}",
            )
        if not (f.id_lookup or f.type == "id"):
            raise ApiError(
                400,
                "INVALID_FIELD",
                f"Field {f.name} is not an External ID or indexed field for {schema.name}",
            )
        return f.name

    async def by_external_id(request: Request) -> Response:
        schema = require_schema(ctx, request.path_params["object"])
        version = request.path_params["version"]
        field_name = _ext_field(schema, request.path_params["field"])
        value = request.path_params["value"]
        matches = org.find(schema.name, field_name, value)
        if len(matches) > 1:
            return json_response([record_url(version, schema.name, m) for m in matches], 300)
        if request.method == "GET":
            if not matches:
                raise not_found()
            record = org.get(schema.name, matches[0])
            assert record is not None
            return json_response(api_record(schema, record, version, _fields_param(request)))
        if request.method == "DELETE":
            if not matches:
                raise not_found()
            result = org.apply(schema.name, "delete", [{"Id": matches[0]}])[0]
            return Response(status_code=204) if result["success"] else record_error(result)
        body = await read_json(request)
        if not isinstance(body, dict):
            raise ApiError(400, "JSON_PARSER_ERROR", "Cannot deserialize instance of SObject")
        key = "Id" if field_name == "Id" else field_name
        record = {k: v for k, v in body.items() if k.lower() != field_name.lower()}
        record[key] = value
        result = org.apply(schema.name, "upsert", [record], external_id_field=field_name)[0]
        if not result["success"]:
            return record_error(result)
        return json_response(result, 201 if result["created"] else 200)

    cursors: OrderedDict[str, tuple[list[dict[str, Any]], int]] = OrderedDict()
    cursor_numbers = itertools.count(secrets.randbelow(10**6))

    def _page(
        records: list[dict[str, Any]], total: int, start: int, size: int, version: str
    ) -> dict[str, Any]:
        end = start + size
        body: dict[str, Any] = {"totalSize": total, "done": end >= len(records)}
        if end < len(records):
            locator = ids.make_id("01g", next(cursor_numbers))
            cursors[locator] = (records, total)
            while len(cursors) > _MAX_CURSORS:
                cursors.popitem(last=False)
            body["nextRecordsUrl"] = f"/services/data/v{version}/query/{locator}-{end}"
        body["records"] = records[start:end]
        return body

    def _batch_size(request: Request) -> int:
        options = request.headers.get("sforce-query-options", "")
        for part in options.split(","):
            name, _, value = part.partition("=")
            if name.strip().lower() == "batchsize":
                try:
                    return min(2000, max(200, int(value)))
                except ValueError:
                    break
        return DEFAULT_QUERY_BATCH

    async def query(request: Request) -> Response:
        from sf_activation.emulator import soql

        version = request.path_params["version"]
        if "explain" in request.query_params:
            from sf_activation.emulator.rest_resources import explain

            return json_response(explain(ctx, request.query_params["explain"]))
        text = request.query_params.get("q")
        if not text:
            raise ApiError(400, "MALFORMED_QUERY", "A query string has to be specified")
        try:
            if request.query_params.get("columns", "").lower() == "true":
                return json_response(soql.column_metadata(text, org))
            kwargs: dict[str, Any] = {}
            if request.url.path.rstrip("/").endswith("queryAll"):
                kwargs["include_deleted"] = True
            result = soql.run_query(text, org, version, **kwargs)
        except soql.SoqlError as error:
            raise ApiError(400, error.error_code, error.message) from None
        except UnknownObjectError:
            raise not_found() from None
        records = result.records
        # COUNT() reports its count in total_size with no records.
        total = max(result.total_size or 0, len(records))
        return json_response(_page(records, total, 0, _batch_size(request), version))

    async def query_more(request: Request) -> Response:
        version = request.path_params["version"]
        locator, _, offset = request.path_params["locator"].partition("-")
        saved = cursors.get(locator)
        if saved is None or not offset.isdigit():
            raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        records, total = saved
        return json_response(_page(records, total, int(offset), _batch_size(request), version))

    return [
        *api("", resources, ["GET"]),
        *api("/limits", limits, ["GET"]),
        *api("/limits/recordCount", record_count, ["GET"]),
        *api("/sobjects", global_describe, ["GET"]),
        *api("/sobjects/{object}", sobject_basic, ["GET"]),
        *api("/sobjects/{object}", create, ["POST"]),
        *api("/sobjects/{object}/describe", describe, ["GET"]),
        *api("/sobjects/{object}/{record_id}", by_id, ["GET", "PATCH", "DELETE"]),
        *api("/sobjects/{object}/{field}/{value}", by_external_id, ["GET", "PATCH", "DELETE"]),
        *api("/query", query, ["GET"]),
        *api("/queryAll", query, ["GET"]),
        *api("/query/{locator}", query_more, ["GET"]),
        *api("/queryAll/{locator}", query_more, ["GET"]),
    ]


def versions_routes() -> list[Route]:
    async def versions(request: Request) -> Response:
        return json_response(
            [{"label": f"v{v}", "url": f"/services/data/v{v}", "version": v} for v in API_VERSIONS]
        )

    return with_slash("/services/data", versions, ["GET"])
