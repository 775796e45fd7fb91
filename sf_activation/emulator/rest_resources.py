"""REST resources beyond records and queries, as jsforce and simple-salesforce call them.

- `sobjects/{X}/describe/layouts[/{recordTypeId}]`, `describe/namedLayouts/{name}`,
  `describe/compactLayouts[/{recordTypeId}|/primary]`, `describe/approvalLayouts`,
  and the global `compactLayouts?q=A,B` (layouts.py makes them from the describe);
- SOSL: `search?q=FIND {…}` and `parameterizedSearch` (GET and POST; sosl.py);
- `recent`: records stamped by SOQL `FOR VIEW` / `FOR REFERENCE`, newest first;
- `sobjects/{X}/updated?start=&end=` and `sobjects/{X}/deleted?start=&end=`, from the
  records' SystemModstamp and the recycle bin ("sObject Get Updated / Get Deleted"
  in the REST API guide: seconds are ignored, at most 30 days back);
- `tabs`, `theme`, `sobjects/{X}/listviews` (+ `{id}`, `{id}/describe`, `{id}/results`,
  `recent`), `quickActions` and `sobjects/{X}/quickActions/{name}` (GET describes, POST
  creates the record the action creates);
- `query?explain=`: a query plan in the "Query Plan" tool's shape;
- the versioned resource list (`/services/data/vXX.X/`), `identity` included.

They are mounted before `rest_routes`, whose `sobjects/{X}/{id}` and
`sobjects/{X}/{field}/{value}` templates would otherwise catch these paths.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sf_activation.emulator import layouts, locks, soql, sosl
from sf_activation.emulator.auth import identity_url
from sf_activation.emulator.context import Context
from sf_activation.emulator.org import UnknownObjectError
from sf_activation.emulator.responses import ApiError, json_response, not_found, read_json
from sf_activation.emulator.rest import api, record_error, record_url, require_schema
from sf_activation.emulator.schema import format_datetime

REPLICATION_DAYS = 30  # Get Updated / Get Deleted look back at most this far
RECYCLE_BIN_DAYS = 15
MAX_RECENT = 200
DEFAULT_LIST_VIEW_ROWS = 25
# What `GET /services/data/vXX.X/` lists on a real org (API 62.0, a Developer Edition):
# the resources served here, and those a real org lists that the emulator does not serve
# (they answer 404 NOT_FOUND), so clients discovering resources see the usual set.
RESOURCES = (
    "tooling", "metadata", "eclair", "folders", "prechatForms", "contact-tracing",
    "jsonxform", "chatter", "payments", "tabs", "appMenu", "quickActions", "queryAll",
    "commerce", "wave", "iot", "analytics", "search", "smartdatadiscovery", "composite",
    "parameterizedSearch", "fingerprint", "theme", "nouns", "domino", "event",
    "serviceTemplates", "recent", "connect", "licensing", "limits", "process", "dedupe",
    "async-queries", "query", "jobs", "match", "emailConnect", "compactLayouts",
    "knowledgeManagement", "sobjects", "actions", "support",
)  # fmt: skip


def install_parent_locks(ctx: Context) -> None:
    """Parent row locks on or off as the fault spec says (locks.py)."""
    locks.install(
        ctx.org,
        bool(ctx.faults.spec.parent_locks),
        lambda: locks.hold_seconds(ctx.faults.spec.lock_ms, ctx.faults.latency_s),
        lambda: ctx.faults.spec.lock_wait_ms / 1000.0,
    )


def resource_directory(ctx: Context, version: str) -> dict[str, str]:
    base = f"/services/data/v{version}"
    out = {name: f"{base}/{name}" for name in RESOURCES}
    # A full URL, unlike the others (the identity service lives outside /services/data).
    out["identity"] = identity_url(ctx)
    return out


def _sosl_error(error: sosl.SoslError) -> ApiError:
    return ApiError(400, error.error_code, error.message)


# --------------------------------------------------------------------------- replication


def _replication_date(request: Request, name: str) -> datetime:
    raw = request.query_params.get(name)
    if not raw:
        raise ApiError(400, "MISSING_ARGUMENT", f"{name}: parameter must be specified")
    text = raw.strip().replace(" ", "+")  # an unencoded `+` arrives as a space
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(
            400, "INVALID_REPLICATION_DATE", f"{name}: not a valid dateTime: {raw}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # "The API ignores the seconds portion of the specified dateTime value."
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def _window(request: Request) -> tuple[str, str, datetime]:
    """(start, covered end) as stored-datetime strings, and the covered end itself."""
    start = _replication_date(request, "start")
    end = _replication_date(request, "end")
    now = datetime.now(UTC)
    if start >= end:
        raise ApiError(
            400, "INVALID_REPLICATION_DATE", "startDate must chronologically precede endDate"
        )
    if start < now - timedelta(days=REPLICATION_DAYS):
        raise ApiError(
            400,
            "INVALID_REPLICATION_DATE",
            f"startDate cannot be more than {REPLICATION_DAYS} days ago",
        )
    covered = min(end, now)
    return format_datetime(start), format_datetime(covered), covered


def _stamp(record: dict[str, Any]) -> str:
    return record.get("SystemModstamp") or record.get("LastModifiedDate") or ""


# --------------------------------------------------------------------------- explain


def _indexed(f: dict[str, Any]) -> bool:
    return (
        f["type"] in ("id", "reference")
        or bool(f.get("idLookup") or f.get("externalId") or f.get("unique") or f.get("nameField"))
        or f["name"] in ("CreatedDate", "SystemModstamp", "Email")
    )


def _conditions(node: Any) -> tuple[list[Any], bool]:
    """Top-level ANDed conditions of a WHERE tree, and whether an OR/NOT was met."""
    if node is None:
        return [], False
    if isinstance(node, soql._BoolOp):
        if node.op == "AND":
            out: list[Any] = []
            other = False
            for arg in node.args:
                conds, has_other = _conditions(arg)
                out.extend(conds)
                other = other or has_other
            return out, other
        return [], True
    return [node], False


def explain(ctx: Context, text: str) -> dict[str, Any]:
    """A plausible query plan: an index plan per indexed filter, a table scan, notes."""
    org = ctx.org
    if text.startswith("00B"):  # a list view id: explain its query
        for name in org.object_names():
            describe = org.describe(name) or {}
            for view in layouts.list_views(describe, org):
                if view["id"][:15] == text[:15]:
                    text = view["query"]
    try:
        query = soql._parse(text)
        result = soql.run_query(text, org, "62.0")
    except soql.SoqlError as error:
        raise ApiError(400, error.error_code, error.message) from None
    except UnknownObjectError:
        raise not_found() from None
    describe = org.describe(query.object_name) or {}
    name = describe.get("name", query.object_name)
    fields = {f["name"].lower(): f for f in describe.get("fields") or ()}
    total = org.count(name)
    cardinality = max(result.total_size, len(result.records))
    conditions, has_or = _conditions(query.where)
    notes = [
        {
            "description": "Not considering filter for optimization because unindexed",
            "fields": ["IsDeleted"],
            "tableEnumOrId": name,
        }
    ]
    plans = []
    unindexed = []
    for cond in conditions:
        path = cond.field.path
        f = fields.get(path[-1].lower()) if len(path) == 1 else None
        if f is None or not _indexed(f) or cond.op in ("!=", "NOT IN", "EXCLUDES"):
            unindexed.append(f["name"] if f else ".".join(path))
            continue
        # Standard indexes are selective under 30% of the rows, custom ones under 10%.
        threshold = max(1.0, total * (0.1 if f.get("custom") else 0.3))
        plans.append(
            {
                "cardinality": cardinality,
                "fields": [f["name"]],
                "leadingOperationType": "Index",
                "notes": [],
                "relativeCost": round(cardinality / threshold, 3),
                "sobjectCardinality": total,
                "sobjectType": name,
            }
        )
    if unindexed:
        notes.append(
            {
                "description": "Not considering filter for optimization because unindexed",
                "fields": unindexed,
                "tableEnumOrId": name,
            }
        )
    if has_or:
        notes.append(
            {
                "description": "Not considering filter for optimization because of a "
                "disjunction (OR) or negation",
                "fields": [],
                "tableEnumOrId": name,
            }
        )
    plans.append(
        {
            "cardinality": cardinality,
            "fields": [],
            "leadingOperationType": "TableScan",
            "notes": notes,
            "relativeCost": round(0.65 + total / 100_000, 3),
            "sobjectCardinality": total,
            "sobjectType": name,
        }
    )
    plans.sort(key=lambda p: p["relativeCost"])
    return {"plans": plans, "sourceQuery": text}


# --------------------------------------------------------------------------- routes


def resource_routes(ctx: Context) -> list[Route]:
    org = ctx.org

    def _layoutable(request: Request) -> dict[str, Any]:
        schema = require_schema(ctx, request.path_params["object"])
        describe = schema.describe
        if not describe.get("layoutable", True):
            raise not_found()
        return describe

    # ---- layouts ----------------------------------------------------------------------

    async def describe_layouts(request: Request) -> Response:
        describe = _layoutable(request)
        return json_response(layouts.layouts(describe, org, request.path_params["version"]))

    async def layout_for_record_type(request: Request) -> Response:
        describe = _layoutable(request)
        wanted = request.path_params["record_type"]
        known = {i[:15] for i in layouts.record_type_ids(describe)}
        if wanted[:15] not in known:
            raise not_found()
        return json_response(layouts.layout(describe, org, request.path_params["version"]))

    async def named_layout(request: Request) -> Response:
        describe = _layoutable(request)
        names = {n.lower(): n for n in layouts.named_layout_names(describe)}
        if request.path_params["name"].lower() not in names:
            raise not_found()
        return json_response(
            {
                "layouts": [layouts.layout(describe, org, request.path_params["version"])],
                "recordTypeMappings": [],
                "recordTypeSelectorRequired": [False],
            }
        )

    async def compact_layouts(request: Request) -> Response:
        describe = _layoutable(request)
        return json_response(layouts.compact_layouts(describe, org, request.path_params["version"]))

    async def compact_layout(request: Request) -> Response:
        describe = _layoutable(request)
        which = request.path_params["which"]
        known = {i[:15] for i in layouts.record_type_ids(describe)}
        if which.lower() != "primary" and which[:15] not in known:
            raise not_found()
        return json_response(layouts.compact_layout(describe, org))

    async def global_compact_layouts(request: Request) -> Response:
        wanted = [n.strip() for n in request.query_params.get("q", "").split(",") if n.strip()]
        if not wanted:
            raise ApiError(400, "MISSING_ARGUMENT", "q: parameter must be specified")
        out = {}
        for name in wanted:
            schema = require_schema(ctx, name)
            out[schema.name] = layouts.compact_layout(schema.describe, org)
        return json_response(out)

    async def approval_layouts(request: Request) -> Response:
        _layoutable(request)
        # No approval processes are defined in the emulated org.
        return json_response({"approvalLayouts": []})

    async def approval_layout(request: Request) -> Response:
        _layoutable(request)
        raise not_found()

    # ---- search -----------------------------------------------------------------------

    async def search(request: Request) -> Response:
        text = request.query_params.get("q")
        if not text:
            raise ApiError(400, "MISSING_ARGUMENT", "q: parameter must be specified")
        try:
            parsed = sosl.parse_search(text)
            records = sosl.run_search(parsed, org, request.path_params["version"])
        except sosl.SoslError as error:
            raise _sosl_error(error) from None
        return json_response({"searchRecords": records})

    def _search_params(request: Request) -> dict[str, Any]:
        params = request.query_params
        body: dict[str, Any] = {k: params[k] for k in ("q", "in") if k in params}
        for key in ("overallLimit", "defaultLimit"):
            if key in params:
                body[key] = int(params[key])
        if "fields" in params:
            body["fields"] = [f for f in params["fields"].split(",") if f]
        names = [n for value in params.getlist("sobject") for n in value.split(",") if n]
        specs = []
        for name in names:
            spec: dict[str, Any] = {"name": name}
            for key in ("fields", "limit", "where", "orderBy"):
                value = params.get(f"{name}.{key}")
                if value is not None:
                    spec[key] = [f for f in value.split(",") if f] if key == "fields" else value
            specs.append(spec)
        if specs:
            body["sobjects"] = specs
        return body

    async def parameterized_search(request: Request) -> Response:
        if request.method == "POST":
            body = await read_json(request)
            if not isinstance(body, dict):
                raise ApiError(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
        else:
            try:
                body = _search_params(request)
            except ValueError:
                raise ApiError(400, "INVALID_SEARCH", "limits must be integers") from None
        try:
            parsed = sosl.parameterized(body)
            if not parsed.returning:
                fields = [str(f) for f in body.get("fields") or []] or ["Id"]
                parsed.returning = [sosl.Returning(n, fields) for n in sosl.searchable_objects(org)]
            records = sosl.run_search(parsed, org, request.path_params["version"])
        except sosl.SoslError as error:
            raise _sosl_error(error) from None
        except (TypeError, ValueError):
            raise ApiError(400, "INVALID_SEARCH", "limits must be integers") from None
        return json_response({"searchRecords": records})

    # ---- recent, updated, deleted -----------------------------------------------------

    async def recent(request: Request) -> Response:
        version = request.path_params["version"]
        try:
            limit = min(MAX_RECENT, int(request.query_params.get("limit", MAX_RECENT)))
        except ValueError:
            raise ApiError(400, "INVALID_QUERY_FILTER_OPERATOR", "limit must be a number") from None
        seen: list[tuple[str, str, dict[str, Any]]] = []
        for name in org.object_names():
            schema = org.schema(name)
            if schema is None or not (
                {"LastViewedDate", "LastReferencedDate"} & set(schema.fields)
            ):
                continue
            for record in org.records(name):
                stamp = max(
                    record.get("LastViewedDate") or "", record.get("LastReferencedDate") or ""
                )
                if stamp:
                    seen.append((stamp, schema.name, record))
        seen.sort(key=lambda item: item[0], reverse=True)
        out = []
        for _, name, record in seen[:limit]:
            describe = org.describe(name) or {}
            shown = layouts.name_field(describe)
            out.append(
                {
                    "attributes": {"type": name, "url": record_url(version, name, record["Id"])},
                    "Id": record["Id"],
                    shown: record.get(shown),
                }
            )
        return json_response(out)

    async def updated(request: Request) -> Response:
        schema = require_schema(ctx, request.path_params["object"])
        start, end, covered = _window(request)
        found = [r["Id"] for r in org.records(schema.name) if start <= _stamp(r) < end]
        return json_response({"ids": found, "latestDateCovered": format_datetime(covered)})

    async def deleted(request: Request) -> Response:
        schema = require_schema(ctx, request.path_params["object"])
        start, end, covered = _window(request)
        binned = org.deleted_records(schema.name)
        # The recycle bin keeps deletions RECYCLE_BIN_DAYS; earlier ones are not known.
        floor = format_datetime(datetime.now(UTC) - timedelta(days=RECYCLE_BIN_DAYS))
        gone = sorted(
            (
                {"deletedDate": _stamp(r), "id": r["Id"]}
                for r in binned
                if start <= _stamp(r) < end and _stamp(r) >= floor
            ),
            key=lambda item: item["deletedDate"],
        )
        earliest = min((_stamp(r) for r in binned), default=format_datetime(covered))
        return json_response(
            {
                "deletedRecords": gone,
                "earliestDateAvailable": max(earliest, floor),
                "latestDateCovered": format_datetime(covered),
            }
        )

    # ---- tabs, theme ------------------------------------------------------------------

    def _instance(request: Request) -> str:
        return ctx.instance_url or str(request.base_url).rstrip("/")

    async def tabs(request: Request) -> Response:
        return json_response(layouts.tabs(org, _instance(request)))

    async def theme(request: Request) -> Response:
        return json_response(layouts.theme(org, _instance(request)))

    # ---- list views -------------------------------------------------------------------

    def _view(request: Request) -> tuple[dict[str, Any], dict[str, Any]]:
        schema = require_schema(ctx, request.path_params["object"])
        wanted = request.path_params["view_id"]
        for view in layouts.list_views(schema.describe, org):
            if view["id"][:15] == wanted[:15] or view["developerName"] == wanted:
                return schema.describe, view
        raise not_found()

    async def list_views(request: Request) -> Response:
        schema = require_schema(ctx, request.path_params["object"])
        version = request.path_params["version"]
        views = [
            layouts.list_view_summary(v, schema.name, version)
            for v in layouts.list_views(schema.describe, org)
        ]
        return json_response(
            {
                "done": True,
                "listviews": views,
                "nextRecordsUrl": None,
                "size": len(views),
                "sobjectType": schema.name,
            }
        )

    async def list_view(request: Request) -> Response:
        describe, view = _view(request)
        summary = layouts.list_view_summary(view, describe["name"], request.path_params["version"])
        return json_response({**summary, "sobjectType": describe["name"]})

    async def list_view_describe(request: Request) -> Response:
        describe, view = _view(request)
        return json_response(layouts.list_view_describe(view, describe))

    async def list_view_results(request: Request) -> Response:
        describe, view = _view(request)
        try:
            limit = int(request.query_params.get("limit", DEFAULT_LIST_VIEW_ROWS))
            offset = int(request.query_params.get("offset", 0))
        except ValueError:
            raise ApiError(
                400, "INVALID_QUERY_FILTER_OPERATOR", "limit and offset are numbers"
            ) from None
        limit = max(1, min(limit, 2000))
        try:
            result = soql.run_query(view["query"], org, request.path_params["version"])
        except soql.SoqlError as error:  # pragma: no cover - the views' own SOQL
            raise ApiError(400, error.error_code, error.message) from None
        rows = result.records[offset : offset + limit]
        return json_response(layouts.list_view_results(view, describe, rows))

    # ---- quick actions ----------------------------------------------------------------

    def _actions(request: Request) -> tuple[str | None, list[dict[str, Any]]]:
        if "object" in request.path_params:
            schema = require_schema(ctx, request.path_params["object"])
            return schema.name, layouts.object_actions(org, schema.name)
        return None, layouts.global_actions(org)

    def _action(request: Request) -> dict[str, Any]:
        _, actions = _actions(request)
        action = layouts.find_action(actions, request.path_params["action"])
        if action is None:
            raise not_found()
        return action

    async def quick_actions(request: Request) -> Response:
        _, actions = _actions(request)
        version = request.path_params["version"]
        return json_response([layouts.action_summary(a, version) for a in actions])

    async def quick_action_describe(request: Request) -> Response:
        action = _action(request)
        target = require_schema(ctx, action["target"])
        return json_response(
            layouts.action_describe(action, target.describe, org, request.path_params["version"])
        )

    async def quick_action(request: Request) -> Response:
        if request.method == "GET":
            return await quick_action_describe(request)
        action = _action(request)
        body = await read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("record", {}), dict):
            raise ApiError(
                400, "JSON_PARSER_ERROR", 'expected {"contextId": "…", "record": {field: value}}'
            )
        context_id = body.get("contextId")
        if action["context"] and not context_id:
            raise ApiError(400, "MISSING_ARGUMENT", "contextId: must not be null")
        record = {**layouts.action_defaults(action, context_id), **(body.get("record") or {})}
        target = require_schema(ctx, action["target"])
        result = org.apply(target.name, "insert", [record])[0]
        if not result["success"]:
            return record_error(result)
        return json_response(
            {
                "contextId": context_id,
                "created": True,
                "errors": [],
                "feedItemIds": [],
                "id": result["id"],
                "success": True,
                "successMessage": f"{target.label} was created.",
            },
            201,
        )

    async def quick_action_defaults(request: Request) -> Response:
        action = _action(request)
        values = layouts.action_defaults(action, request.path_params.get("context_id"))
        return json_response({"attributes": {"type": action["target"]}, **values})

    obj = "/sobjects/{object}"
    return [
        *api(f"{obj}/describe/layouts", describe_layouts, ["GET"]),
        *api(f"{obj}/describe/layouts/{{record_type}}", layout_for_record_type, ["GET"]),
        *api(f"{obj}/describe/namedLayouts/{{name}}", named_layout, ["GET"]),
        *api(f"{obj}/describe/compactLayouts", compact_layouts, ["GET"]),
        *api(f"{obj}/describe/compactLayouts/{{which}}", compact_layout, ["GET"]),
        *api(f"{obj}/describe/approvalLayouts", approval_layouts, ["GET"]),
        *api(f"{obj}/describe/approvalLayouts/{{name}}", approval_layout, ["GET"]),
        *api(f"{obj}/updated", updated, ["GET"]),
        *api(f"{obj}/deleted", deleted, ["GET"]),
        *api(f"{obj}/listviews", list_views, ["GET"]),
        *api(f"{obj}/listviews/recent", list_views, ["GET"]),
        *api(f"{obj}/listviews/{{view_id}}", list_view, ["GET"]),
        *api(f"{obj}/listviews/{{view_id}}/describe", list_view_describe, ["GET"]),
        *api(f"{obj}/listviews/{{view_id}}/results", list_view_results, ["GET"]),
        *api(f"{obj}/quickActions", quick_actions, ["GET"]),
        *api(f"{obj}/quickActions/{{action}}", quick_action, ["GET", "POST"]),
        *api(f"{obj}/quickActions/{{action}}/describe", quick_action_describe, ["GET"]),
        *api(f"{obj}/quickActions/{{action}}/defaultValues", quick_action_defaults, ["GET"]),
        *api(
            f"{obj}/quickActions/{{action}}/defaultValues/{{context_id}}",
            quick_action_defaults,
            ["GET"],
        ),
        *api("/quickActions", quick_actions, ["GET"]),
        *api("/quickActions/{action}", quick_action, ["GET", "POST"]),
        *api("/quickActions/{action}/describe", quick_action_describe, ["GET"]),
        *api("/quickActions/{action}/defaultValues", quick_action_defaults, ["GET"]),
        *api("/compactLayouts", global_compact_layouts, ["GET"]),
        *api("/search", search, ["GET"]),
        *api("/parameterizedSearch", parameterized_search, ["GET", "POST"]),
        *api("/recent", recent, ["GET"]),
        *api("/tabs", tabs, ["GET"]),
        *api("/theme", theme, ["GET"]),
    ]
