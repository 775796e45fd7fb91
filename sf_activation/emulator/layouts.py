"""Page layouts, compact layouts, list views, tabs, themes and quick actions, made up
from each object's describe.

An org's layouts are configuration nobody has here, so these are plausible stand-ins
in the shapes the REST API documents (DescribeLayoutResult, DescribeCompactLayout,
ListView / ListViewDescribe / ListViewResult, DescribeTab, DescribeTheme,
DescribeQuickAction): what jsforce's `describeLayout`, simple-salesforce's
`describe_layout` and the UI-style clients read. A layout shows the object's writable
fields the way a default Salesforce layout does: an "Information" section (name and
owner first), the addresses, the long texts and a "System Information" section; its
related lists are the object's child relationships.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sf_activation.emulator import ids

MASTER_RECORD_TYPE = "012000000000000AAA"
# Fields a default layout leaves out: the system's own, and Data.com / photo clutter.
_HIDDEN = frozenset(
    {
        "Id", "IsDeleted", "MasterRecordId", "CreatedDate", "LastModifiedDate",
        "SystemModstamp", "LastActivityDate", "LastViewedDate", "LastReferencedDate",
        "PhotoUrl", "Jigsaw", "JigsawCompanyId", "JigsawContactId", "CleanStatus",
        "LastCURequestDate", "LastCUUpdateDate", "IsArchived", "RecurrenceActivityId",
    }
)  # fmt: skip
_SYSTEM = ("CreatedById", "LastModifiedById")
# Tab colours and icon names of the standard objects (Lightning's theme4 palette).
_STANDARD_TABS = {
    "Account": ("7F8DE1", "account"),
    "Contact": ("A094ED", "contact"),
    "Lead": ("F88962", "lead"),
    "Opportunity": ("FCB95B", "opportunity"),
    "Case": ("F2CF5B", "case"),
    "Task": ("4BC076", "task"),
    "Event": ("EB7092", "event"),
    "User": ("65CAE4", "user"),
}


def stable_id(prefix: str, *parts: str) -> str:
    """An id with the given key prefix that stays the same across runs for the same parts."""
    digest = hashlib.sha256("/".join(parts).encode()).digest()
    return ids.make_id(prefix, int.from_bytes(digest[:5], "big"))


def _fields(describe: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in describe.get("fields") or ()}


def name_field(describe: dict[str, Any]) -> str:
    for f in describe.get("fields") or ():
        if f.get("nameField"):
            return f["name"]
    names = _fields(describe)
    for candidate in ("Name", "Subject", "CaseNumber"):
        if candidate in names:
            return candidate
    return "Id"


def _component(f: dict[str, Any], tab_order: int) -> dict[str, Any]:
    return {
        "details": f,
        "displayLines": 1,
        "tabOrder": tab_order,
        "type": "Field",
        "value": f["name"],
    }


def _item(
    describe: dict[str, Any], f: dict[str, Any], tab_order: int, *, editable: bool = True
) -> dict[str, Any]:
    fields = _fields(describe)
    component = _component(f, tab_order)
    if f["type"] == "address" or (f["name"] == "Name" and f.get("extraTypeInfo") == "personname"):
        # Compound fields (an address, a person's name) show their parts in one item.
        parts = [p for p in fields.values() if p.get("compoundFieldName") == f["name"]]
        component["components"] = [_component(p, tab_order) for p in parts if p is not f]
    required = (
        bool(f.get("createable")) and not f.get("nillable") and not f.get("defaultedOnCreate")
    )
    return {
        "editableForNew": editable and bool(f.get("createable")),
        "editableForUpdate": editable and bool(f.get("updateable")),
        "label": f.get("label") or f["name"],
        "layoutComponents": [component],
        "placeholder": False,
        "required": required and f["type"] != "boolean",
    }


def _placeholder() -> dict[str, Any]:
    return {
        "editableForNew": False,
        "editableForUpdate": False,
        "label": "",
        "layoutComponents": [{"displayLines": 1, "tabOrder": 0, "type": "EmptySpace"}],
        "placeholder": True,
        "required": False,
    }


def _section(
    object_name: str, heading: str, items: list[dict[str, Any]], columns: int = 2
) -> dict[str, Any]:
    rows = []
    for start in range(0, len(items), columns):
        chunk = items[start : start + columns]
        while len(chunk) < columns:
            chunk.append(_placeholder())
        rows.append({"layoutItems": chunk, "numItems": len(chunk)})
    return {
        "collapsed": False,
        "columns": columns,
        "heading": heading,
        "layoutRows": rows,
        "layoutSectionId": stable_id("01B", object_name, heading),
        "parentLayoutId": stable_id("00h", object_name, "layout"),
        "rows": len(rows),
        "tabOrder": "TopToBottom",
        "useCollapsibleSection": False,
        "useHeading": True,
    }


def _groups(describe: dict[str, Any]) -> tuple[list[dict], list[dict], list[dict]]:
    """(main, addresses, long texts): the fields a default layout shows, in order."""
    main: list[dict[str, Any]] = []
    addresses: list[dict[str, Any]] = []
    long_texts: list[dict[str, Any]] = []
    first = name_field(describe)
    fields = _fields(describe)
    for f in describe.get("fields") or ():
        name = f["name"]
        if name in _HIDDEN or name in _SYSTEM or name == first:
            continue
        if f["type"] == "address":
            addresses.append(f)
        elif f.get("compoundFieldName") and f.get("compoundFieldName") != name:
            continue  # shown inside its compound field
        elif f["type"] == "textarea" and (f.get("length") or 0) > 255:
            long_texts.append(f)
        elif f.get("createable") or f.get("updateable") or name == "OwnerId":
            main.append(f)
    if first in fields:
        main.insert(0, fields[first])
    return main, addresses, long_texts


def _related_lists(describe: dict[str, Any], org: Any) -> list[dict[str, Any]]:
    out = []
    for child in describe.get("childRelationships") or ():
        rel = child.get("relationshipName")
        child_describe = org.describe(child["childSObject"]) if rel else None
        if child_describe is None or child_describe.get("name") == "User":
            continue
        shown = name_field(child_describe)
        child_fields = _fields(child_describe)
        columns = [
            {
                "field": f"{child_describe['name']}.{shown}",
                "fieldApiName": shown,
                "format": None,
                "label": child_fields.get(shown, {}).get("label", shown),
                "lookupId": "Id",
                "name": shown,
                "sortable": True,
            }
        ]
        out.append(
            {
                "accessLevelRequiredForCreate": None,
                "buttons": [_button("New", f"New{child_describe['name']}")],
                "columns": columns,
                "custom": bool(child_describe.get("custom")),
                "field": child["field"],
                "label": child_describe.get("labelPlural") or rel,
                "limitRows": 5,
                "name": rel,
                "sobject": child_describe["name"],
                "sort": [{"ascending": False, "column": "LastModifiedDate"}],
            }
        )
    return out


def _button(label: str, name: str) -> dict[str, Any]:
    return {
        "behavior": None,
        "colors": None,
        "content": None,
        "contentSource": None,
        "custom": False,
        "encoding": None,
        "height": None,
        "icons": None,
        "label": label,
        "menubar": False,
        "name": name,
        "overridden": False,
        "resizeable": False,
        "scrollbars": False,
        "showsLocation": False,
        "showsStatus": False,
        "toolbar": False,
        "url": None,
        "width": None,
        "windowPosition": None,
    }


def layout(describe: dict[str, Any], org: Any, version: str) -> dict[str, Any]:
    """One DescribeLayout: detail and edit sections, buttons, related lists, actions."""
    name = describe["name"]
    label = describe.get("label") or name
    fields = _fields(describe)
    main, addresses, long_texts = _groups(describe)

    def sections(editable: bool) -> list[dict[str, Any]]:
        out = [
            _section(
                name,
                f"{label} Information",
                [_item(describe, f, 1, editable=editable) for f in main],
            )
        ]
        if addresses:
            out.append(
                _section(
                    name,
                    "Address Information",
                    [_item(describe, f, 2, editable=editable) for f in addresses],
                )
            )
        if long_texts:
            out.append(
                _section(
                    name,
                    "Description Information",
                    [_item(describe, f, 3, editable=editable) for f in long_texts],
                    columns=1,
                )
            )
        return out

    detail = sections(editable=True)
    system = [fields[n] for n in _SYSTEM if n in fields]
    if system:
        detail.append(
            _section(
                name, "System Information", [_item(describe, f, 4, editable=False) for f in system]
            )
        )
    return {
        "buttonLayoutSection": {
            "detailButtons": [
                _button("Edit", "Edit"),
                _button("Delete", "Delete"),
                _button("Clone", "Clone"),
            ]
        },
        "detailLayoutSections": detail,
        "editLayoutSections": sections(editable=True),
        "feedView": None,
        "highlightsPanelLayoutSection": None,
        "id": stable_id("00h", name, "layout"),
        "multirowEditLayoutSections": [],
        "offlineLinks": [],
        "quickActionList": {
            "quickActionListItems": [
                {
                    "accessLevelRequired": None,
                    "colors": [],
                    "iconUrl": None,
                    "icons": [],
                    "label": a["label"],
                    "miniIconUrl": None,
                    "quickActionName": a["name"],
                    "targetSobjectType": a["target"],
                    "type": a["type"],
                    "urls": {},
                }
                for a in object_actions(org, name)
            ]
        },
        "relatedContent": None,
        "relatedLists": _related_lists(describe, org),
        "saveOptions": [],
    }


def record_type_id(describe: dict[str, Any]) -> str:
    for info in describe.get("recordTypeInfos") or ():
        if info.get("master") or info.get("defaultRecordTypeMapping"):
            return info.get("recordTypeId") or MASTER_RECORD_TYPE
    return MASTER_RECORD_TYPE


def record_type_ids(describe: dict[str, Any]) -> set[str]:
    found = {i.get("recordTypeId") for i in describe.get("recordTypeInfos") or ()}
    return {i for i in found if i} | {MASTER_RECORD_TYPE}


def layouts(describe: dict[str, Any], org: Any, version: str) -> dict[str, Any]:
    """GET sobjects/{X}/describe/layouts: the layout and the record type mapping."""
    the_layout = layout(describe, org, version)
    rt = record_type_id(describe)
    picklists = [
        {"picklistName": f["name"], "picklistValues": f.get("picklistValues") or []}
        for f in describe.get("fields") or ()
        if f["type"] in ("picklist", "multipicklist")
        and (f.get("createable") or f.get("updateable"))
    ]
    base = f"/services/data/v{version}/sobjects/{describe['name']}/describe/layouts"
    return {
        "layouts": [the_layout],
        "recordTypeMappings": [
            {
                "available": True,
                "defaultRecordTypeMapping": True,
                "developerName": "Master",
                "layoutId": the_layout["id"],
                "master": True,
                "name": "Master",
                "picklistsForRecordType": picklists,
                "recordTypeId": rt,
                "urls": {"layout": f"{base}/{rt}"},
            }
        ],
        "recordTypeSelectorRequired": [False],
    }


def named_layout_names(describe: dict[str, Any]) -> set[str]:
    names = {i.get("name") for i in describe.get("namedLayoutInfos") or ()}
    if describe.get("name") == "User":
        names.add("UserAlt")  # the named layout every org has (the user profile page)
    return {n for n in names if n}


def compact_layout(describe: dict[str, Any], org: Any) -> dict[str, Any]:
    """The "System Default" compact layout: the name and up to six key fields."""
    main, _, _ = _groups(describe)
    shown = [f for f in main if f["type"] not in ("textarea", "boolean")][:7]
    return {
        "actions": [_button("Edit", "Edit"), _button("Delete", "Delete")],
        "fieldItems": [_item(describe, f, i + 1, editable=False) for i, f in enumerate(shown)],
        "id": None,
        "imageItems": [],
        "label": "System Default",
        "name": "SYSTEM",
        "objectType": describe["name"],
    }


def compact_layouts(describe: dict[str, Any], org: Any, version: str) -> dict[str, Any]:
    base = f"/services/data/v{version}/sobjects/{describe['name']}/describe/compactLayouts"
    rt = record_type_id(describe)
    return {
        "compactLayouts": [compact_layout(describe, org)],
        "defaultCompactLayoutId": None,
        "recordTypeCompactLayoutMappings": [
            {
                "available": True,
                "compactLayoutId": None,
                "compactLayoutName": "SYSTEM",
                "recordTypeId": rt,
                "recordTypeName": "Master",
                "urls": {"compactLayout": f"{base}/{rt}"},
            }
        ],
        "urls": {"primary": f"{base}/primary"},
    }


# --------------------------------------------------------------------------- list views


def list_views(describe: dict[str, Any], org: Any) -> list[dict[str, Any]]:
    """The standard list views of an object: All, My (owned), New This Week, Recently Viewed.

    Each carries its SOQL (`query`) and describe columns.
    """
    name = describe["name"]
    plural = describe.get("labelPlural") or name
    key = plural.replace(" ", "")
    fields = _fields(describe)
    first = name_field(describe)
    main, _, _ = _groups(describe)
    columns = [first] + [
        f["name"]
        for f in main
        if f["name"] != first and f["type"] in ("string", "picklist", "phone", "email", "url")
    ][:3]
    views: list[tuple[str, str, str, str]] = [
        (f"All{key}", f"All {plural}", "", f"{first} ASC NULLS FIRST")
    ]
    if "OwnerId" in fields:
        views.append(
            (f"My{key}", f"My {plural}", f"OwnerId = '{org.user_id}'", f"{first} ASC NULLS FIRST")
        )
    views.append(
        ("NewThisWeek", "New This Week", "CreatedDate = LAST_N_DAYS:7", "CreatedDate DESC")
    )
    if "LastViewedDate" in fields:
        views.append(
            (
                f"RecentlyViewed{key}",
                f"Recently Viewed {plural}",
                "LastViewedDate != null",
                "LastViewedDate DESC",
            )
        )
    hidden = [n for n in ("Id", "CreatedDate", "LastModifiedDate", "SystemModstamp") if n in fields]
    out = []
    for developer_name, label, where, order in views:
        select = ", ".join(dict.fromkeys([*columns, *hidden]))
        soql_text = f"SELECT {select} FROM {name}"
        if where:
            soql_text += f" WHERE {where}"
        soql_text += f" ORDER BY {order}"
        out.append(
            {
                "columns": columns,
                "hidden": hidden,
                "developerName": developer_name,
                "id": stable_id("00B", name, developer_name),
                "label": label,
                "query": soql_text,
                "where": where,
                "order": order,
            }
        )
    return out


def list_view_summary(view: dict[str, Any], object_name: str, version: str) -> dict[str, Any]:
    url = f"/services/data/v{version}/sobjects/{object_name}/listviews/{view['id']}"
    return {
        "describeUrl": f"{url}/describe",
        "developerName": view["developerName"],
        "id": view["id"],
        "label": view["label"],
        "resultsUrl": f"{url}/results",
        "soqlCompatible": True,
        "url": url,
    }


def _sort_labels(field_type: str) -> tuple[str, str]:
    if field_type in ("int", "double", "currency", "percent", "long"):
        return "Low to High", "High to Low"
    if field_type in ("date", "datetime", "time"):
        return "Old to New", "New to Old"
    return "A-Z", "Z-A"


def list_view_columns(view: dict[str, Any], describe: dict[str, Any]) -> list[dict[str, Any]]:
    fields = _fields(describe)
    order_field = view["order"].split()[0]
    descending = " DESC" in view["order"].upper()
    out = []
    for name in [*view["columns"], *view["hidden"]]:
        f = fields.get(name, {"label": name, "type": "string"})
        ascending, descending_label = _sort_labels(f["type"])
        sorted_here = name == order_field
        out.append(
            {
                "ascendingLabel": ascending,
                "descendingLabel": descending_label,
                "fieldNameOrPath": name,
                "hidden": name in view["hidden"],
                "label": f.get("label") or name,
                "searchable": f["type"] in ("string", "email", "phone", "textarea"),
                "selectListItem": f"toLabel({name})" if f["type"] == "picklist" else name,
                "sortDirection": ("descending" if descending else "ascending")
                if sorted_here
                else None,
                "sortIndex": 0 if sorted_here else None,
                "sortable": f["type"] not in ("textarea", "address"),
                "type": f["type"],
            }
        )
    return out


def list_view_describe(view: dict[str, Any], describe: dict[str, Any]) -> dict[str, Any]:
    order_field, _, direction = view["order"].partition(" ")
    where = view["where"]
    condition: dict[str, Any] = {"conditions": [], "conjunction": "and"}
    if where.startswith("OwnerId"):
        condition = {
            "field": "OwnerId",
            "operator": "equals",
            "values": [where.split("=")[1].strip()],
        }
    elif where:
        field_name, _, value = where.partition(" ")
        condition = {"field": field_name, "operator": "equals", "values": [value.strip()]}
    return {
        "columns": list_view_columns(view, describe),
        "id": view["id"],
        "orderBy": [
            {
                "fieldNameOrPath": order_field,
                "nullsPosition": "first",
                "sortDirection": "descending" if "DESC" in direction.upper() else "ascending",
            }
        ],
        "query": view["query"],
        "relatedEntityId": None,
        "scope": "everything",
        "scopeEntityId": None,
        "sobjectType": describe["name"],
        "whereCondition": condition,
    }


def _text(value: Any) -> str | None:
    # List view results carry every value as text, the way the UI shows it.
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def list_view_results(
    view: dict[str, Any], describe: dict[str, Any], records: list[dict[str, Any]]
) -> dict[str, Any]:
    names = [*view["columns"], *view["hidden"]]
    return {
        "columns": list_view_columns(view, describe),
        "developerName": view["developerName"],
        "done": True,
        "id": view["id"],
        "label": view["label"],
        "records": [
            {"columns": [{"fieldNameOrPath": n, "value": _text(r.get(n))} for n in names]}
            for r in records
        ],
        "size": len(records),
    }


# --------------------------------------------------------------------------- tabs, themes


def _icons(instance_url: str, icon: str) -> list[dict[str, Any]]:
    base = f"{instance_url}/img/icon/t4v35/standard/{icon}"
    return [
        {
            "contentType": "image/png",
            "height": 120,
            "theme": "theme4",
            "url": f"{base}_120.png",
            "width": 120,
        },
        {
            "contentType": "image/png",
            "height": 60,
            "theme": "theme4",
            "url": f"{base}_60.png",
            "width": 60,
        },
        {
            "contentType": "image/svg+xml",
            "height": 0,
            "theme": "theme4",
            "url": f"{base}.svg",
            "width": 0,
        },
    ]


def _tab_style(describe: dict[str, Any]) -> tuple[str, str]:
    name = describe["name"]
    if name in _STANDARD_TABS:
        return _STANDARD_TABS[name]
    # Custom objects: a colour of their own, the generic custom icon.
    digest = hashlib.sha256(name.encode()).hexdigest()
    return digest[:6].upper(), "custom"


def tabs(org: Any, instance_url: str) -> list[dict[str, Any]]:
    """GET /tabs: one tab per layoutable object (standard ones are `standard-{Object}`)."""
    out = []
    for name in org.object_names():
        describe = org.describe(name) or {}
        if not describe.get("layoutable", True) or name in ("User", "Organization"):
            continue
        color, icon = _tab_style(describe)
        custom = bool(describe.get("custom"))
        icons = _icons(instance_url, icon)
        out.append(
            {
                "colors": [
                    {"color": color, "context": "primary", "theme": "theme4"},
                    {"color": color, "context": "primary", "theme": "theme3"},
                ],
                "custom": custom,
                "iconUrl": icons[1]["url"],
                "icons": icons,
                "label": describe.get("labelPlural") or name,
                "miniIconUrl": icons[1]["url"],
                "name": name if custom else f"standard-{name}",
                "sobjectName": name,
                "url": f"{instance_url}/{describe.get('keyPrefix') or ''}/o",
            }
        )
    return out


def theme(org: Any, instance_url: str) -> dict[str, Any]:
    """GET /theme: colours and icons per object."""
    items = []
    for name in org.object_names():
        describe = org.describe(name) or {}
        color, icon = _tab_style(describe)
        items.append(
            {
                "colors": [
                    {"color": color, "context": "primary", "theme": "theme4"},
                    {"color": color, "context": "primary", "theme": "theme3"},
                ],
                "icons": _icons(instance_url, icon),
                "name": name,
            }
        )
    return {"themeItems": items}


# --------------------------------------------------------------------------- quick actions

# (name, label, type, target object, the target's field the context record fills)
_OBJECT_ACTIONS: dict[str, list[tuple[str, str, str, str, str | None]]] = {
    "Account": [
        ("NewContact", "New Contact", "Create", "Contact", "AccountId"),
        ("NewOpportunity", "New Opportunity", "Create", "Opportunity", "AccountId"),
        ("NewCase", "New Case", "Create", "Case", "AccountId"),
    ],
    "Contact": [("NewCase", "New Case", "Create", "Case", "ContactId")],
}
_ACTIVITY_ACTIONS = [
    ("LogACall", "Log a Call", "LogACall", "Task"),
    ("NewTask", "New Task", "Create", "Task"),
    ("NewEvent", "New Event", "Create", "Event"),
]
_GLOBAL_ACTIONS = [
    ("NewAccount", "New Account", "Create", "Account"),
    ("NewContact", "New Contact", "Create", "Contact"),
    ("NewLead", "New Lead", "Create", "Lead"),
    ("NewOpportunity", "New Opportunity", "Create", "Opportunity"),
    ("NewCase", "New Case", "Create", "Case"),
    ("NewTask", "New Task", "Create", "Task"),
    ("NewEvent", "New Event", "Create", "Event"),
    ("LogACall", "Log a Call", "LogACall", "Task"),
]


def object_actions(org: Any, object_name: str) -> list[dict[str, Any]]:
    """The quick actions of an object (context record: one of its records)."""
    out = []
    for name, label, kind, target, parent_field in _OBJECT_ACTIONS.get(object_name, []):
        if org.describe(target) is not None:
            out.append(_action(name, label, kind, target, parent_field, object_name))
    if object_name in ("Contact", "Lead"):
        link = "WhoId"
    elif object_name in ("Account", "Opportunity", "Case"):
        link = "WhatId"
    else:
        link = None
    if link:
        for name, label, kind, target in _ACTIVITY_ACTIONS:
            if org.describe(target) is not None:
                out.append(_action(name, label, kind, target, link, object_name))
    return out


def global_actions(org: Any) -> list[dict[str, Any]]:
    return [
        _action(name, label, kind, target, None, None)
        for name, label, kind, target in _GLOBAL_ACTIONS
        if org.describe(target) is not None
    ]


def _action(
    name: str, label: str, kind: str, target: str, parent_field: str | None, context: str | None
) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": kind,
        "target": target,
        "parent_field": parent_field,
        "context": context,
    }


def find_action(actions: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    # Object-specific actions are also addressed as `Account.NewContact`.
    short = name.rpartition(".")[2]
    return next((a for a in actions if a["name"].lower() == short.lower()), None)


def action_summary(action: dict[str, Any], version: str) -> dict[str, Any]:
    base = f"/services/data/v{version}"
    url = (
        f"{base}/sobjects/{action['context']}/quickActions/{action['name']}"
        if action["context"]
        else f"{base}/quickActions/{action['name']}"
    )
    return {
        "actionEnumOrId": action["name"],
        "label": action["label"],
        "name": action["name"],
        "type": action["type"],
        "urls": {
            "defaultValuesTemplate": f"{url}/defaultValues/{{ID}}",
            "quickAction": url,
            "describe": f"{url}/describe",
            "defaultValues": f"{url}/defaultValues",
        },
    }


_LOG_A_CALL_DEFAULTS = {"Status": "Completed", "TaskSubtype": "Call", "Subject": "Call"}


def action_defaults(action: dict[str, Any], context_id: str | None) -> dict[str, Any]:
    """The field values the action fills in before the user's (and the context record)."""
    values: dict[str, Any] = {}
    if action["type"] == "LogACall":
        values.update(_LOG_A_CALL_DEFAULTS)
    elif action["target"] == "Task":
        values["TaskSubtype"] = "Task"
    if context_id and action["parent_field"]:
        values[action["parent_field"]] = context_id
    return values


def action_describe(
    action: dict[str, Any], target_describe: dict[str, Any], org: Any, version: str
) -> dict[str, Any]:
    main, _, _ = _groups(target_describe)
    shown = [f for f in main if f["name"] != action["parent_field"]][:8]
    section = _section(
        target_describe["name"],
        action["label"],
        [_item(target_describe, f, 1) for f in shown],
        columns=1,
    )
    defaults = action_defaults(action, None)
    return {
        **action_summary(action, version),
        "accessLevelRequired": None,
        "canvasApplicationId": None,
        "canvasApplicationName": None,
        "colors": [],
        "contextSobjectType": action["context"],
        "defaultValues": [{"defaultValue": v, "field": k} for k, v in defaults.items()],
        "flowDevName": None,
        "flowRecordIdVar": None,
        "height": None,
        "iconName": None,
        "iconUrl": None,
        "icons": [],
        "layout": section,
        "lightningComponentBundleId": None,
        "lightningComponentBundleName": None,
        "lightningComponentQualifiedName": None,
        "miniIconUrl": None,
        "mobileExtensionDisplayMode": None,
        "mobileExtensionId": None,
        "showQuickActionLcHeader": False,
        "showQuickActionVfHeader": False,
        "targetParentField": action["parent_field"],
        "targetRecordTypeId": None,
        "targetSobjectType": action["target"],
        "visualforcePageName": None,
        "visualforcePageUrl": None,
        "width": None,
    }
