"""Per-object field maps precomputed from a describe, and per-field value coercion.

Everything an incoming value is checked against is computed once per describe, so the
write path does dictionary look-ups and one small function call per value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any


class RecordError(Exception):
    """One record-level error, in the shape of a Collections/Bulk result error."""

    def __init__(self, status_code: str, message: str, fields: list[str] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.fields = fields or []

    def as_dict(self) -> dict[str, Any]:
        return {"statusCode": self.status_code, "message": self.message, "fields": self.fields}


STRING_TYPES = frozenset(
    {"string", "textarea", "phone", "url", "picklist", "multipicklist", "combobox", "email"}
    | {"encryptedstring", "base64"}
)
# Number, Currency and Percent: stored as exact Decimals at the field's scale.
NUMBER_TYPES = frozenset({"double", "currency", "percent"})
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NUMBER_RE = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
# Salesforce keeps dates from 1700-01-01 to 4000-12-31 (GMT) only: "Minimum and Maximum
# Dates" in the SOQL date formats reference, and "Data Import Dates" in the Data Loader
# guide. No page names the error a write outside that range gets (one report of an Apex
# insert saw FIELD_INTEGRITY_EXCEPTION); the API's answer to a value a date field cannot
# take is INVALID_TYPE_ON_FIELD_IN_RECORD, so that is what the emulator says.
MIN_YEAR = 1700
MAX_YEAR = 4000


def _type_error(f: FieldInfo, value: Any) -> RecordError:
    return RecordError(
        "INVALID_TYPE_ON_FIELD_IN_RECORD",
        f"{f.label}: value not of required type: {value}",
        [f.name],
    )


def _coerce_string(f: FieldInfo, value: Any, csv: bool) -> Any:
    if not isinstance(value, str):
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, int | float | Decimal):
            value = repr(value) if isinstance(value, float) else str(value)
        else:
            raise _type_error(f, value)
    if "\x00" in value:
        # A real org drops NUL characters from the text it saves (JSON `\u0000` and CSV
        # alike); what is left is what the length and picklist rules see.
        value = value.replace("\x00", "")
    if f.length and len(value) > f.length:
        raise RecordError(
            "STRING_TOO_LONG",
            f"{f.label}: data value too large: {value} (max length={f.length})",
            [f.name],
        )
    if f.restricted is not None:
        parts = value.split(";") if f.type == "multipicklist" else (value,)
        for part in parts:
            if part not in f.restricted:
                raise RecordError(
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    f"{f.label}: bad value for restricted picklist field: {part}",
                    [f.name],
                )
    if f.type == "email" and value and not _EMAIL_RE.match(value):
        raise RecordError(
            "INVALID_EMAIL_ADDRESS", f"{f.label}: invalid email address: {value}", [f.name]
        )
    return value


def _coerce_plain_string(f: FieldInfo, value: Any, csv: bool) -> Any:
    # Fast path for text fields without picklist or e-mail rules (most fields).
    if type(value) is str and len(value) <= f.length and "\x00" not in value:
        return value
    return _coerce_string(f, value, csv)


def _out_of_range(f: FieldInfo, value: Any) -> RecordError:
    return RecordError(
        "NUMBER_OUTSIDE_VALID_RANGE",
        f"{f.label}: value outside of valid range on numeric field: {value}",
        [f.name],
    )


def _coerce_int(f: FieldInfo, value: Any, csv: bool) -> Any:
    if isinstance(value, bool):
        raise _type_error(f, value)
    if isinstance(value, int):
        number = value
    elif isinstance(value, float | Decimal) and _integral(value):
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            exact = _decimal(value)
            if exact is None or not _integral(exact):
                raise _type_error(f, value) from None
            number = int(exact)
    else:
        raise _type_error(f, value)
    # Integer fields carry their size in `digits`.
    if f.digits > 0 and abs(number) >= 10**f.digits:
        raise _out_of_range(f, value)
    return number


def _integral(number: float | Decimal) -> bool:
    if isinstance(number, float):
        return number.is_integer()
    return number.is_finite() and number == number.to_integral_value()


def _decimal(text: str) -> Decimal | None:
    text = text.strip()
    return Decimal(text) if _NUMBER_RE.match(text) else None


def _coerce_double(f: FieldInfo, value: Any, csv: bool) -> Any:
    """An exact Decimal at the field's scale (Salesforce keeps 18 digits, not a float)."""
    kind = type(value)
    if kind is float:
        # repr is the shortest literal that reads back as this float: the one sent.
        number = Decimal(repr(value))
    elif kind is str:
        parsed = _decimal(value)
        if parsed is None:
            raise _type_error(f, value)
        number = parsed
    elif kind is Decimal:
        number = value
    elif kind is int:
        number = Decimal(value)
    else:
        raise _type_error(f, value)
    if not number.is_finite():
        raise _type_error(f, value)
    try:
        # Salesforce rounds to the scale half away from zero (BigDecimal HALF_UP).
        rounded = number.quantize(f.quantum, ROUND_HALF_UP)
    except InvalidOperation:  # more digits than a Decimal context holds: far too big
        raise _out_of_range(f, value) from None
    # precision is total digits, scale the ones after the point; checked after rounding,
    # so 999.995 at Number(5, 2) (1000.00) is refused too.
    if f.number_limit is not None and abs(rounded) >= f.number_limit:
        raise _out_of_range(f, value)
    return rounded


def _coerce_boolean(f: FieldInfo, value: Any, csv: bool) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
    raise _type_error(f, value)


def _coerce_date(f: FieldInfo, value: Any, csv: bool) -> Any:
    if isinstance(value, str):
        text = value.strip()
        try:
            # A datetime given for a date field keeps its date part, as the API does.
            day = date.fromisoformat(text) if _DATE_RE.match(text) else _parse_datetime(text).date()
        except (ValueError, OverflowError):
            pass
        else:
            if MIN_YEAR <= day.year <= MAX_YEAR:
                return day.isoformat()
    raise _type_error(f, value)


def _parse_datetime(text: str) -> datetime:
    if _DATE_RE.match(text):
        return datetime.fromisoformat(text).replace(tzinfo=UTC)
    if "T" not in text:
        raise ValueError(text)
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_datetime(moment: datetime) -> str:
    """The way the API writes datetimes: `2024-05-01T12:00:00.000+0000`."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def _coerce_datetime(f: FieldInfo, value: Any, csv: bool) -> Any:
    if isinstance(value, str):
        try:
            moment = _parse_datetime(value.strip())
        except (ValueError, OverflowError):
            pass
        else:
            # The range is in GMT: 1699-12-31T20:00:00-05:00 is 1700 and fine.
            if MIN_YEAR <= moment.year <= MAX_YEAR:
                return format_datetime(moment)
    raise _type_error(f, value)


def _coerce_time(f: FieldInfo, value: Any, csv: bool) -> Any:
    if isinstance(value, str) and re.match(r"^\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?Z?$", value.strip()):
        return value.strip()
    raise _type_error(f, value)


def _coerce_any(f: FieldInfo, value: Any, csv: bool) -> Any:
    return value


_COERCERS: dict[str, Callable[[FieldInfo, Any, bool], Any]] = {
    **dict.fromkeys(STRING_TYPES, _coerce_string),
    "int": _coerce_int,
    "long": _coerce_int,
    "double": _coerce_double,
    "currency": _coerce_double,
    "percent": _coerce_double,
    "boolean": _coerce_boolean,
    "date": _coerce_date,
    "datetime": _coerce_datetime,
    "time": _coerce_time,
}


class FieldInfo:
    """What the write path needs to know about one field."""

    __slots__ = (
        "name",
        "label",
        "type",
        "length",
        "precision",
        "scale",
        "digits",
        "nillable",
        "createable",
        "updateable",
        "defaulted_on_create",
        "default_value",
        "external_id",
        "id_lookup",
        "unique",
        "case_sensitive",
        "auto_number",
        "reference_to",
        "relationship_name",
        "restricted",
        "coerce",
        "null_value",
        "quantum",
        "number_limit",
    )

    def __init__(self, raw: dict[str, Any]) -> None:
        self.name: str = raw["name"]
        self.label: str = raw.get("label") or self.name
        self.type: str = raw.get("type") or "string"
        self.length: int = int(raw.get("length") or 0)
        self.precision: int = int(raw.get("precision") or 0)
        self.scale: int = int(raw.get("scale") or 0)
        self.digits: int = int(raw.get("digits") or 0)
        # What a Number/Currency/Percent value is rounded to on save: 1, 0.01, ...
        self.quantum = Decimal(1).scaleb(-self.scale)
        # The smallest magnitude with more integer digits than precision - scale allows.
        self.number_limit: Decimal | None = (
            Decimal(10) ** max(self.precision - self.scale, 0) if self.precision else None
        )
        self.nillable: bool = bool(raw.get("nillable", True))
        self.createable: bool = bool(raw.get("createable", False))
        self.updateable: bool = bool(raw.get("updateable", False))
        self.defaulted_on_create: bool = bool(raw.get("defaultedOnCreate", False))
        self.default_value: Any = raw.get("defaultValue")
        if self.default_value is None and self.type == "picklist":
            # Picklist defaults live on the value, not on the field.
            for entry in raw.get("picklistValues") or ():
                if entry.get("defaultValue") and entry.get("active", True):
                    self.default_value = entry.get("value")
                    break
        self.external_id: bool = bool(raw.get("externalId", False))
        self.id_lookup: bool = bool(raw.get("idLookup", False)) or self.external_id
        self.unique: bool = bool(raw.get("unique", False))
        self.case_sensitive: bool = bool(raw.get("caseSensitive", False))
        self.auto_number: bool = bool(raw.get("autoNumber", False))
        self.reference_to: tuple[str, ...] = tuple(raw.get("referenceTo") or ())
        self.relationship_name: str | None = raw.get("relationshipName")
        restricted = None
        if raw.get("restrictedPicklist"):
            restricted = frozenset(
                p["value"] for p in raw.get("picklistValues") or () if p.get("active", True)
            )
        self.restricted: frozenset[str] | None = restricted
        self.coerce = _COERCERS.get(self.type, _coerce_any)
        if self.coerce is _coerce_string and restricted is None and self.type != "email":
            self.coerce = _coerce_plain_string if self.length else _coerce_string
        # Salesforce stores null in a checkbox as false.
        self.null_value: Any = False if self.type == "boolean" else None

    @property
    def required_on_create(self) -> bool:
        # Salesforce's own rule of thumb for "required": describe has no such flag.
        return (
            self.createable
            and not self.nillable
            and not self.defaulted_on_create
            and self.type != "boolean"
        )

    def index_key(self, value: Any) -> str:
        """How values of this field compare when matching external ids or uniqueness."""
        text = value if isinstance(value, str) else str(value)
        return text if self.case_sensitive else text.lower()


class ObjectSchema:
    """One object's describe plus the look-up tables the write path uses."""

    def __init__(self, describe: dict[str, Any], key_prefix: str) -> None:
        self.describe = describe
        self.name: str = describe["name"]
        self.label: str = describe.get("label") or self.name
        self.key_prefix = key_prefix
        self.createable = bool(describe.get("createable", True))
        self.updateable = bool(describe.get("updateable", True))
        self.deletable = bool(describe.get("deletable", True))
        self.fields: dict[str, FieldInfo] = {}
        self.by_lower: dict[str, FieldInfo] = {}
        self.relationships: dict[str, FieldInfo] = {}
        for raw in describe.get("fields") or ():
            info = FieldInfo(raw)
            self.fields[info.name] = info
            self.by_lower[info.name.lower()] = info
            if info.type == "reference" and info.relationship_name:
                self.relationships[info.relationship_name.lower()] = info
        # Exact-name look-ups for the common case: writable, neither Id nor a lookup.
        self.create_fast = {
            f.name: f
            for f in self.fields.values()
            if f.createable and f.type not in ("id", "reference")
        }
        self.update_fast = {
            f.name: f
            for f in self.fields.values()
            if f.updateable and f.type not in ("id", "reference")
        }
        self.required = tuple(f for f in self.fields.values() if f.required_on_create)
        # Fields whose values must stay unique get an index from the start.
        self.unique_fields = tuple(f for f in self.fields.values() if f.unique and f.type != "id")
        self.create_defaults: tuple[tuple[str, Any], ...] = tuple(
            (f.name, f.default_value if f.default_value is not None else False)
            if f.type == "boolean"
            else (f.name, f.default_value)
            for f in self.fields.values()
            if (f.type == "boolean" or f.default_value is not None)
            and f.name != "IsDeleted"
            and not f.auto_number
        )
        self.auto_number_fields = tuple(f for f in self.fields.values() if f.auto_number)
        # Contact/Lead `Name` is compound (First + Last), filled in by the org, not writable.
        name = self.fields.get("Name")
        self.compound_name = name is not None and not name.createable and "LastName" in self.fields

    def field(self, name: str) -> FieldInfo | None:
        return self.fields.get(name) or self.by_lower.get(name.lower())
