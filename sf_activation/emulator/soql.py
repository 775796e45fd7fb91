"""SOQL for the emulator's `query` / `queryMore`: tokenizer, recursive-descent parser, evaluator.

Supported: field lists (case-insensitive, echoed in the describe's casing), parent
relationship fields one level up (`Account.Name`), child sub-queries
(`(SELECT Name FROM Opportunities)`), `COUNT()` and `COUNT(field)` (with an optional
alias), WHERE with comparison operators, IN / NOT IN, LIKE, INCLUDES / EXCLUDES,
AND / OR / NOT and parentheses, literals (strings with escapes, numbers, null,
true/false, dates, datetimes, TODAY-style date literals), ORDER BY (ASC/DESC,
NULLS FIRST/LAST, several keys), LIMIT, OFFSET and FOR VIEW / FOR REFERENCE. Anything else is a MALFORMED_QUERY,
as a real org would answer for a query it cannot parse.

The `org` is duck-typed: `describe(name) -> dict | None` (case-insensitive),
`records(name) -> Iterable[dict]`, `get(name, id) -> dict | None`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol


class OrgLike(Protocol):
    def describe(self, name: str) -> dict[str, Any] | None: ...

    def records(self, name: str) -> Iterable[dict[str, Any]]: ...

    def get(self, name: str, record_id: str) -> dict[str, Any] | None: ...


class SoqlError(Exception):
    """A query the org refuses; `error_code` is what goes in the REST error body."""

    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message


@dataclass
class QueryResult:
    object_name: str
    records: list[dict[str, Any]]
    aggregate: bool = False
    # COUNT() reports its count here with no records; otherwise len(records).
    total_size: int = 0


# --------------------------------------------------------------------------- tokenizer

_KEYWORDS = {
    "SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "LIKE", "ORDER", "BY", "ASC",
    "DESC", "NULLS", "FIRST", "LAST", "LIMIT", "OFFSET", "NULL", "TRUE", "FALSE",
    "INCLUDES", "EXCLUDES", "GROUP", "HAVING", "WITH", "FOR", "USING", "TYPEOF",
}  # fmt: skip

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:?\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2}(?![\d:T]))
  | (?P<number>[+-]?(?:\d+\.\d*|\.\d+|\d+))
  | (?P<string>')
  | (?P<op><=|>=|!=|<>|=|<|>)
  | (?P<punct>[(),:])
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    """,
    re.VERBOSE,
)
_STRING_ESCAPES = {
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "b": "\b",
    "f": "\f",
    '"': '"',
    "'": "'",
    "\\": "\\",
}


@dataclass(frozen=True)
class _Token:
    kind: str  # ident, keyword, string, number, date, datetime, op, punct, eof
    value: Any
    pos: int
    text: str = ""


def _tokenize(soql: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    n = len(soql)
    while pos < n:
        m = _TOKEN_RE.match(soql, pos)
        if not m:
            raise _malformed(soql, pos, soql[pos])
        kind = m.lastgroup or ""
        start = pos
        pos = m.end()
        if kind == "ws":
            continue
        if kind == "string":
            value, pos = _read_string(soql, pos)
            # LIKE patterns need to know which wildcards were escaped: keep raw text too.
            tokens.append(_Token("string", value, start, soql[start:pos]))
            continue
        text = m.group()
        if kind == "ident" and "." not in text and text.upper() in _KEYWORDS:
            tokens.append(_Token("keyword", text.upper(), start, text))
        elif kind == "number":
            # Exact, as the numbers it is compared with are (18-digit Number fields).
            value: Any = Decimal(text) if "." in text else int(text)
            tokens.append(_Token("number", value, start, text))
        else:
            tokens.append(_Token(kind, text, start, text))
    tokens.append(_Token("eof", None, n, ""))
    return tokens


def _read_string(soql: str, pos: int) -> tuple[str, int]:
    out = []
    n = len(soql)
    while pos < n:
        ch = soql[pos]
        if ch == "\\":
            if pos + 1 >= n:
                break
            nxt = soql[pos + 1]
            if nxt in _STRING_ESCAPES:
                out.append(_STRING_ESCAPES[nxt])
            elif nxt in "%_":
                # Kept escaped: only LIKE gives these a meaning; elsewhere they are literal.
                out.append("\\" + nxt)
            elif nxt == "u" and pos + 5 < n:
                out.append(chr(int(soql[pos + 2 : pos + 6], 16)))
                pos += 4
            else:
                raise SoqlError(
                    "MALFORMED_QUERY",
                    f"Invalid string literal '{soql[pos : pos + 2]}'. Illegal character sequence "
                    f"'\\{nxt}' in string literal.",
                )
            pos += 2
            continue
        if ch == "'":
            return "".join(out), pos + 1
        out.append(ch)
        pos += 1
    raise SoqlError("MALFORMED_QUERY", "unexpected token: <EOF>: unterminated string literal")


def _row_col(soql: str, pos: int) -> tuple[int, int]:
    before = soql[:pos]
    row = before.count("\n") + 1
    col = pos - (before.rfind("\n") + 1) + 1
    return row, col


def _located(soql: str, pos: int, message: str) -> str:
    """Salesforce's error layout: the query, a caret under the culprit, then the message."""
    row, col = _row_col(soql, pos)
    line = soql.splitlines()[row - 1] if soql.strip() else ""
    return f"\n{line}\n{' ' * (col - 1)}^\nERROR at Row:{row}:Column:{col}\n{message}"


def _malformed(soql: str, pos: int, found: str) -> SoqlError:
    return SoqlError("MALFORMED_QUERY", _located(soql, pos, f"unexpected token: '{found}'"))


# --------------------------------------------------------------------------- AST


@dataclass
class _FieldRef:
    path: list[str]
    pos: int


@dataclass
class _Count:
    field: _FieldRef | None  # None: COUNT()
    alias: str | None
    pos: int


@dataclass
class _SubQuery:
    query: _Query
    pos: int


@dataclass
class _Cond:
    field: _FieldRef
    op: str  # = != < <= > >= IN NOT IN LIKE INCLUDES EXCLUDES
    value: Any  # _Literal or list[_Literal]
    pos: int


@dataclass
class _Literal:
    kind: str  # string, number, date, datetime, null, boolean, date_range
    value: Any
    pos: int
    raw: str = ""


@dataclass
class _BoolOp:
    op: str  # AND OR NOT
    args: list[Any]


@dataclass
class _Order:
    field: _FieldRef
    descending: bool
    nulls_last: bool


@dataclass
class _Query:
    select: list[Any]
    object_name: str
    object_pos: int
    where: Any = None
    order: list[_Order] = field(default_factory=list)
    limit: int | None = None
    offset: int | None = None
    # `FOR VIEW` / `FOR REFERENCE` (last clause of the outer query): the returned records'
    # LastViewedDate / LastReferencedDate are stamped, as in a real org.
    for_clause: str | None = None


# --------------------------------------------------------------------------- parser


class _Parser:
    def __init__(self, soql: str) -> None:
        self.soql = soql
        self.tokens = _tokenize(soql)
        self.i = 0

    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def _advance(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def _error(self, tok: _Token | None = None) -> SoqlError:
        tok = tok or self.tok
        if tok.kind == "eof":
            return SoqlError(
                "MALFORMED_QUERY", _located(self.soql, tok.pos, "unexpected token: <EOF>")
            )
        return _malformed(self.soql, tok.pos, tok.text)

    def _is_kw(self, *words: str) -> bool:
        return self.tok.kind == "keyword" and self.tok.value in words

    def _expect_kw(self, word: str) -> _Token:
        if not self._is_kw(word):
            raise self._error()
        return self._advance()

    def _expect_punct(self, ch: str) -> _Token:
        if not (self.tok.kind == "punct" and self.tok.value == ch):
            raise self._error()
        return self._advance()

    def _is_punct(self, ch: str) -> bool:
        return self.tok.kind == "punct" and self.tok.value == ch

    def parse(self) -> _Query:
        query = self._query()
        if self._is_kw("FOR"):
            self._advance()
            tok = self._advance()
            if tok.kind != "ident" or tok.value.upper() not in ("VIEW", "REFERENCE"):
                raise self._error(tok)  # FOR UPDATE is Apex-only: the API refuses it too
            query.for_clause = tok.value.upper()
        if self.tok.kind != "eof":
            raise self._error()
        return query

    def _query(self) -> _Query:
        self._expect_kw("SELECT")
        select = [self._select_item()]
        while self._is_punct(","):
            self._advance()
            select.append(self._select_item())
        self._expect_kw("FROM")
        if self.tok.kind != "ident":
            raise self._error()
        obj = self._advance()
        query = _Query(select, obj.value, obj.pos)
        if self.tok.kind == "ident":  # an alias such as `FROM Account a` is not supported
            raise self._error()
        if self._is_kw("WHERE"):
            self._advance()
            query.where = self._or()
        if self._is_kw("GROUP", "HAVING", "WITH", "USING"):
            raise self._error()
        if self._is_kw("ORDER"):
            self._advance()
            self._expect_kw("BY")
            query.order.append(self._order_item())
            while self._is_punct(","):
                self._advance()
                query.order.append(self._order_item())
        if self._is_kw("LIMIT"):
            self._advance()
            query.limit = self._int()
        if self._is_kw("OFFSET"):
            self._advance()
            query.offset = self._int()
        return query

    def _int(self) -> int:
        tok = self._advance()
        if tok.kind != "number" or not isinstance(tok.value, int) or tok.value < 0:
            raise self._error(tok)
        return tok.value

    def _select_item(self) -> Any:
        tok = self.tok
        if self._is_punct("("):
            self._advance()
            sub = self._query()
            self._expect_punct(")")
            return _SubQuery(sub, tok.pos)
        if tok.kind == "ident" and tok.value.upper() == "COUNT" and self._peek_punct("("):
            self._advance()
            self._advance()
            ref = None
            if not self._is_punct(")"):
                ref = self._field_ref()
            self._expect_punct(")")
            alias = None
            if self.tok.kind == "ident":
                alias = self._advance().value
            return _Count(ref, alias, tok.pos)
        if tok.kind == "keyword" and tok.value == "TYPEOF":
            raise self._error()
        return self._field_ref()

    def _peek_punct(self, ch: str) -> bool:
        nxt = self.tokens[self.i + 1]
        return nxt.kind == "punct" and nxt.value == ch

    def _field_ref(self) -> _FieldRef:
        tok = self.tok
        if tok.kind != "ident":
            raise self._error()
        self._advance()
        return _FieldRef(tok.value.split("."), tok.pos)

    def _order_item(self) -> _Order:
        ref = self._field_ref()
        descending = False
        if self._is_kw("ASC", "DESC"):
            descending = self._advance().value == "DESC"
        nulls_last = descending  # Salesforce's defaults: ASC NULLS FIRST, DESC NULLS LAST
        if self._is_kw("NULLS"):
            self._advance()
            if not self._is_kw("FIRST", "LAST"):
                raise self._error()
            nulls_last = self._advance().value == "LAST"
        return _Order(ref, descending, nulls_last)

    def _or(self) -> Any:
        args = [self._and()]
        while self._is_kw("OR"):
            self._advance()
            args.append(self._and())
        return args[0] if len(args) == 1 else _BoolOp("OR", args)

    def _and(self) -> Any:
        args = [self._not()]
        while self._is_kw("AND"):
            self._advance()
            args.append(self._not())
        return args[0] if len(args) == 1 else _BoolOp("AND", args)

    def _not(self) -> Any:
        if self._is_kw("NOT"):
            self._advance()
            return _BoolOp("NOT", [self._not()])
        if self._is_punct("("):
            self._advance()
            inner = self._or()
            self._expect_punct(")")
            return inner
        return self._condition()

    def _condition(self) -> _Cond:
        ref = self._field_ref()
        tok = self.tok
        if tok.kind == "op":
            self._advance()
            op = "!=" if tok.value == "<>" else tok.value
            return _Cond(ref, op, self._literal(), tok.pos)
        if self._is_kw("LIKE"):
            self._advance()
            return _Cond(ref, "LIKE", self._literal(), tok.pos)
        if self._is_kw("NOT"):
            self._advance()
            self._expect_kw("IN")
            return _Cond(ref, "NOT IN", self._literal_list(), tok.pos)
        if self._is_kw("IN", "INCLUDES", "EXCLUDES"):
            op = self._advance().value
            return _Cond(ref, op, self._literal_list(), tok.pos)
        raise self._error()

    def _literal_list(self) -> list[_Literal]:
        self._expect_punct("(")
        if self._is_kw("SELECT"):
            # Semi-joins are beyond what the emulator answers.
            raise self._error()
        values = [self._literal()]
        while self._is_punct(","):
            self._advance()
            values.append(self._literal())
        self._expect_punct(")")
        return values

    def _literal(self) -> _Literal:
        tok = self._advance()
        if tok.kind in ("string", "number", "date", "datetime"):
            return _Literal(tok.kind, tok.value, tok.pos, tok.text)
        if tok.kind == "keyword" and tok.value == "NULL":
            return _Literal("null", None, tok.pos)
        if tok.kind == "keyword" and tok.value in ("TRUE", "FALSE"):
            return _Literal("boolean", tok.value == "TRUE", tok.pos)
        if tok.kind == "ident":
            rng = _date_range(tok.value, self)
            if rng is not None:
                return _Literal("date_range", rng, tok.pos, tok.text)
        raise self._error(tok)


def _date_range(word: str, parser: _Parser) -> tuple[date, date] | None:
    """TODAY-style date literals as a half-open [start, end) day range (UTC)."""
    today = datetime.now(UTC).date()
    upper = word.upper()
    fixed = {
        "TODAY": (today, today + timedelta(days=1)),
        "YESTERDAY": (today - timedelta(days=1), today),
        "TOMORROW": (today + timedelta(days=1), today + timedelta(days=2)),
    }
    if upper in fixed:
        return fixed[upper]
    if upper in ("LAST_N_DAYS", "NEXT_N_DAYS") and parser._is_punct(":"):
        parser._advance()
        days = parser._int()
        if upper == "LAST_N_DAYS":
            return (today - timedelta(days=days - 1), today + timedelta(days=1))
        return (today + timedelta(days=1), today + timedelta(days=days + 1))
    return None


# --------------------------------------------------------------------------- schema


_TEXT = {
    "string", "textarea", "email", "phone", "url", "picklist", "multipicklist",
    "combobox", "encryptedstring", "id", "reference", "base64",
}  # fmt: skip
_NUMBER = {"int", "long", "double", "currency", "percent"}
_APEX_TYPES = {
    "id": "Id",
    "reference": "Id",
    "boolean": "Boolean",
    "int": "Integer",
    "long": "Long",
    "double": "Double",
    "percent": "Double",
    "currency": "Double",
    "date": "Date",
    "datetime": "Datetime",
    "time": "Time",
    "address": "Address",
    "location": "Location",
    "base64": "Blob",
}


class _Schema:
    """Case-insensitive field and relationship look-ups over one describe."""

    def __init__(self, describe: dict[str, Any]) -> None:
        self.name: str = describe["name"]
        self.describe = describe
        self.fields: dict[str, dict[str, Any]] = {}
        self.relationships: dict[str, dict[str, Any]] = {}
        for f in describe.get("fields") or ():
            self.fields[f["name"].lower()] = f
            if f.get("type") == "reference" and f.get("relationshipName"):
                self.relationships[f["relationshipName"].lower()] = f
        self.children: dict[str, dict[str, Any]] = {
            c["relationshipName"].lower(): c
            for c in describe.get("childRelationships") or ()
            if c.get("relationshipName")
        }


class _Resolver:
    def __init__(self, org: OrgLike, soql: str) -> None:
        self.org = org
        self.soql = soql
        self._schemas: dict[str, _Schema] = {}

    def schema(self, name: str, pos: int) -> _Schema:
        key = name.lower()
        if key not in self._schemas:
            describe = self.org.describe(name)
            if describe is None:
                raise SoqlError(
                    "INVALID_TYPE",
                    _located(
                        self.soql,
                        pos,
                        f"sObject type '{name}' is not supported. If you are attempting to use a "
                        "custom object, be sure to append the '__c' after the entity name. Please "
                        "reference your WSDL or the describe call for the appropriate names.",
                    ),
                )
            self._schemas[key] = _Schema(describe)
        return self._schemas[key]

    def no_column(self, name: str, entity: str, pos: int) -> SoqlError:
        return SoqlError(
            "INVALID_FIELD",
            _located(
                self.soql,
                pos,
                f"No such column '{name}' on entity '{entity}'. If you are attempting to use a "
                "custom field, be sure to append the '__c' after the custom field name. Please "
                "reference your WSDL or the describe call for the appropriate names.",
            ),
        )

    def resolve(self, schema: _Schema, ref: _FieldRef) -> _Path:
        path = list(ref.path)
        # `SELECT Account.Name FROM Account`: a leading object name qualifies the field.
        if (
            len(path) == 2
            and path[0].lower() == schema.name.lower()
            and path[0].lower() not in schema.relationships
        ):
            path = path[1:]
        if len(path) == 1:
            f = schema.fields.get(path[0].lower())
            if f is None:
                raise self.no_column(path[0], schema.name, ref.pos)
            return _Path(None, None, f)
        if len(path) == 2:
            rel = schema.relationships.get(path[0].lower())
            if rel is None:
                raise SoqlError(
                    "INVALID_FIELD",
                    _located(
                        self.soql,
                        ref.pos,
                        f"Didn't understand relationship '{path[0]}' in field path. If you are "
                        "attempting to use a custom relationship, be sure to append the '__r' "
                        "after the custom relationship name. Please reference your WSDL or the "
                        "describe call for the appropriate names.",
                    ),
                )
            targets = [t for t in rel["referenceTo"] if self.org.describe(t) is not None]
            if not targets:
                raise self.no_column(path[1], rel["referenceTo"][0], ref.pos)
            # Polymorphic lookups (Owner → Group|User) resolve fields against the first
            # target that has the field, the way a query on Owner.Name works on both.
            for target in targets:
                parent = self.schema(target, ref.pos)
                f = parent.fields.get(path[1].lower())
                if f is not None:
                    return _Path(rel, targets, f)
            raise self.no_column(path[1], targets[0], ref.pos)
        raise SoqlError(
            "MALFORMED_QUERY",
            _located(
                self.soql, ref.pos, "Relationship fields deeper than one level are not supported"
            ),
        )


@dataclass
class _Path:
    rel: dict[str, Any] | None  # the lookup field on the queried object, for Parent.X
    targets: list[str] | None
    field: dict[str, Any]

    @property
    def display(self) -> str:
        if self.rel is None:
            return self.field["name"]
        return f"{self.rel['relationshipName']}.{self.field['name']}"


# --------------------------------------------------------------------------- evaluation


class _Context:
    """Per-query caches: a parent record is fetched once however many rows point to it."""

    def __init__(self, org: OrgLike, api_version: str) -> None:
        self.org = org
        self.api_version = api_version
        self._parents: dict[tuple[str, str], tuple[str, dict[str, Any]] | None] = {}
        self._children: dict[tuple[str, str], dict[Any, list[dict[str, Any]]]] = {}

    def parent(self, record: dict[str, Any], path: _Path) -> tuple[str, dict[str, Any]] | None:
        assert path.rel is not None and path.targets is not None
        ref_id = record.get(path.rel["name"])
        if not ref_id:
            return None
        key = (path.rel["name"], ref_id)
        if key not in self._parents:
            found = None
            for target in path.targets:
                parent = self.org.get(target, ref_id)
                if parent is not None:
                    found = (self.org.describe(target)["name"], parent)  # type: ignore[index]
                    break
            self._parents[key] = found
        return self._parents[key]

    def children(self, child_object: str, link: str) -> dict[Any, list[dict[str, Any]]]:
        """Child records grouped by parent id, built once per sub-query (not per parent row)."""
        key = (child_object, link)
        if key not in self._children:
            grouped: dict[Any, list[dict[str, Any]]] = {}
            for r in self.org.records(child_object):
                parent_id = r.get(link)
                if parent_id:
                    grouped.setdefault(parent_id, []).append(r)
            self._children[key] = grouped
        return self._children[key]

    def value(self, record: dict[str, Any], path: _Path) -> Any:
        if path.rel is None:
            return record.get(path.field["name"])
        parent = self.parent(record, path)
        return None if parent is None else parent[1].get(path.field["name"])

    def attributes(self, object_name: str, record_id: Any) -> dict[str, Any]:
        return {
            "type": object_name,
            "url": f"/services/data/v{self.api_version}/sobjects/{object_name}/{record_id}",
        }


def _parse_dt(text: str) -> datetime:
    text = text.strip()
    if len(text) == 10:
        return datetime.fromisoformat(text).replace(tzinfo=UTC)
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    elif re.search(r"[+-]\d{4}$", text):
        text = text[:-2] + ":" + text[-2:]
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _exact_number(value: Any) -> Any:
    """A stored number as a Decimal (ints and Decimals exactly; a float as its literal)."""
    if value is None or isinstance(value, Decimal | bool):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    return value


def _type_message(f: dict[str, Any], expected: str, quoted: bool) -> str:
    quotes = "should be enclosed in quotes" if quoted else "should not be enclosed in quotes"
    return (
        f"value of filter criterion for field '{f['name']}' must be of type {expected} and {quotes}"
    )


def _like_regex(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern) and pattern[i + 1] in "%_":
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


def _unescape_wildcards(text: str) -> str:
    return text.replace("\\%", "%").replace("\\_", "_")


class _Compiler:
    """Turns the WHERE tree into one Python predicate over stored records."""

    def __init__(self, resolver: _Resolver, schema: _Schema, ctx: _Context) -> None:
        self.resolver = resolver
        self.schema = schema
        self.ctx = ctx

    def compile(self, node: Any) -> Callable[[dict[str, Any]], bool]:
        if isinstance(node, _BoolOp):
            parts = [self.compile(a) for a in node.args]
            if node.op == "AND":
                return lambda r: all(p(r) for p in parts)
            if node.op == "OR":
                return lambda r: any(p(r) for p in parts)
            inner = parts[0]
            return lambda r: not inner(r)
        return self._condition(node)

    def _error(self, pos: int, message: str) -> SoqlError:
        return SoqlError("INVALID_FIELD", _located(self.resolver.soql, pos, message))

    def _normalize(self, f: dict[str, Any], lit: _Literal) -> Any:
        """A literal as a comparable value for field `f`; refuses mismatched types."""
        t = f["type"]
        if lit.kind == "null":
            return None
        if t in _TEXT:
            if lit.kind != "string":
                raise self._error(lit.pos, _type_message(f, "string", True))
            text = _unescape_wildcards(lit.value)
            if t in ("id", "reference"):
                return text[:15]
            return text.lower()
        if t in _NUMBER:
            if lit.kind != "number":
                raise self._error(lit.pos, _type_message(f, "number", False))
            return Decimal(lit.value)
        if t == "boolean":
            if lit.kind != "boolean":
                raise self._error(lit.pos, _type_message(f, "boolean", False))
            return lit.value
        if t in ("date", "datetime"):
            if lit.kind == "string":
                raise self._error(lit.pos, _type_message(f, t, False))
            if lit.kind == "date_range":
                start, end = lit.value
                return (
                    datetime(start.year, start.month, start.day, tzinfo=UTC),
                    datetime(end.year, end.month, end.day, tzinfo=UTC),
                )
            if lit.kind == "date" or (lit.kind == "datetime" and t == "datetime"):
                return _parse_dt(lit.value)
            raise self._error(lit.pos, _type_message(f, t, False))
        if lit.kind == "string":
            return lit.value.lower()
        return lit.value

    @staticmethod
    def _stored(f: dict[str, Any]) -> Callable[[Any], Any]:
        """How a stored value becomes comparable with `_normalize`d literals."""
        t = f["type"]
        if t in ("id", "reference"):
            return lambda v: v[:15] if isinstance(v, str) else v
        if t in _TEXT:
            return lambda v: v.lower() if isinstance(v, str) else v
        if t in _NUMBER:
            return _exact_number
        if t in ("date", "datetime"):
            return lambda v: _parse_dt(v) if isinstance(v, str) and v else None
        return lambda v: v

    def _condition(self, cond: _Cond) -> Callable[[dict[str, Any]], bool]:
        path = self.resolver.resolve(self.schema, cond.field)
        f = path.field
        ctx = self.ctx
        stored = self._stored(f)

        def get(r: dict[str, Any]) -> Any:
            return stored(ctx.value(r, path))

        op = cond.op
        if op == "LIKE":
            if f["type"] not in _TEXT or cond.value.kind != "string":
                raise self._error(cond.pos, f"invalid operator on field '{f['name']}'")
            rx = _like_regex(cond.value.value)

            def like(r: dict[str, Any]) -> bool:
                v = ctx.value(r, path)
                return isinstance(v, str) and rx.fullmatch(v) is not None

            return like
        if op in ("INCLUDES", "EXCLUDES"):
            if f["type"] != "multipicklist":
                raise self._error(cond.pos, f"invalid operator on field '{f['name']}'")
            wanted = [{p.lower() for p in self._normalize(f, lit).split(";")} for lit in cond.value]

            def includes(r: dict[str, Any]) -> bool:
                v = ctx.value(r, path)
                have = {p.lower() for p in v.split(";")} if isinstance(v, str) and v else set()
                hit = any(w <= have for w in wanted)
                return hit if op == "INCLUDES" else not hit

            return includes
        if op in ("IN", "NOT IN"):
            values = [self._normalize(f, lit) for lit in cond.value]
            if any(isinstance(v, tuple) for v in values):
                raise self._error(cond.pos, "date literals with ranges are not supported in IN")
            members = set(values)
            if op == "IN":
                return lambda r: get(r) in members
            # As in SOQL, NOT IN keeps rows whose value is null (unless null is listed).
            return lambda r: get(r) not in members

        lit = self._normalize(f, cond.value)
        if lit is None:
            if op == "=":
                return lambda r: get(r) is None
            if op == "!=":
                return lambda r: get(r) is not None
            raise self._error(cond.pos, "null can only be compared with = or !=")
        if isinstance(lit, tuple):  # a date range literal such as TODAY
            start, end = lit
            range_ops: dict[str, Callable[[Any], bool]] = {
                "=": lambda v: start <= v < end,
                "!=": lambda v: not (start <= v < end),
                "<": lambda v: v < start,
                "<=": lambda v: v < end,
                ">": lambda v: v >= end,
                ">=": lambda v: v >= start,
            }
            test = range_ops[op]

            def in_range(r: dict[str, Any]) -> bool:
                v = get(r)
                return (op == "!=") if v is None else test(v)

            return in_range
        if op == "=":
            return lambda r: get(r) == lit
        if op == "!=":
            # SOQL counts a null field as "not equal" to any value.
            return lambda r: get(r) != lit
        if f["type"] == "boolean":
            raise self._error(cond.pos, f"invalid operator on field '{f['name']}'")
        compare: dict[str, Callable[[Any], bool]] = {
            "<": lambda v: v < lit,
            "<=": lambda v: v <= lit,
            ">": lambda v: v > lit,
            ">=": lambda v: v >= lit,
        }
        test = compare[op]

        def ordered(r: dict[str, Any]) -> bool:
            v = get(r)
            return v is not None and test(v)

        return ordered


def _sort(
    records: list[dict[str, Any]], keys: list[tuple[_Path, _Order]], ctx: _Context
) -> list[dict[str, Any]]:
    # Stable sorts from the last key to the first give a multi-key order with per-key
    # direction and null placement.
    for path, order in reversed(keys):
        stored = _Compiler._stored(path.field)
        nulls: list[dict[str, Any]] = []
        values: list[tuple[Any, dict[str, Any]]] = []
        for r in records:
            v = stored(ctx.value(r, path))
            if v is None:
                nulls.append(r)
            else:
                values.append((v, r))
        values.sort(key=lambda pair: pair[0], reverse=order.descending)
        ordered = [r for _, r in values]
        records = ordered + nulls if order.nulls_last else nulls + ordered
    return records


# --------------------------------------------------------------------------- entry points


def _parse(soql: str) -> _Query:
    if not soql or not soql.strip():
        raise SoqlError("MALFORMED_QUERY", "unexpected token: <EOF>")
    return _Parser(soql).parse()


def _select(
    query: _Query,
    resolver: _Resolver,
    ctx: _Context,
    rows: Iterable[dict[str, Any]],
) -> tuple[_Schema, list[dict[str, Any]], list[Any]]:
    """Filter and order the rows of one (sub)query; returns the schema, rows and items."""
    schema = resolver.schema(query.object_name, query.object_pos)
    items: list[Any] = []
    for item in query.select:
        if isinstance(item, _FieldRef):
            items.append(resolver.resolve(schema, item))
        else:
            items.append(item)
    predicate = _Compiler(resolver, schema, ctx).compile(query.where) if query.where else None
    selected = [r for r in rows if predicate is None or predicate(r)]
    if query.order:
        keys = [(resolver.resolve(schema, o.field), o) for o in query.order]
        selected = _sort(selected, keys, ctx)
    if query.offset:
        selected = selected[query.offset :]
    if query.limit is not None:
        selected = selected[: query.limit]
    return schema, selected, items


def _shape(
    record: dict[str, Any],
    schema: _Schema,
    items: list[Any],
    resolver: _Resolver,
    ctx: _Context,
) -> dict[str, Any]:
    out: dict[str, Any] = {"attributes": ctx.attributes(schema.name, record.get("Id"))}
    for item in items:
        if isinstance(item, _Path):
            if item.rel is None:
                out[item.field["name"]] = record.get(item.field["name"])
                continue
            rel_name = item.rel["relationshipName"]
            parent = ctx.parent(record, item)
            if parent is None:
                out.setdefault(rel_name, None)
                continue
            nested = out.get(rel_name)
            if nested is None:
                nested = {"attributes": ctx.attributes(parent[0], parent[1].get("Id"))}
                out[rel_name] = nested
            nested[item.field["name"]] = parent[1].get(item.field["name"])
        elif isinstance(item, _SubQuery):
            out.update(_child_rows(record, schema, item, resolver, ctx))
    return out


def _child_rows(
    record: dict[str, Any],
    schema: _Schema,
    sub: _SubQuery,
    resolver: _Resolver,
    ctx: _Context,
) -> dict[str, Any]:
    rel = schema.children.get(sub.query.object_name.lower())
    if rel is None:
        raise SoqlError(
            "INVALID_TYPE",
            _located(
                resolver.soql,
                sub.query.object_pos,
                f"Didn't understand relationship '{sub.query.object_name}' in FROM part of query "
                "call. If you are attempting to use a custom relationship, be sure to append the "
                "'__r' after the custom relationship name. Please reference your WSDL or the "
                "describe call for the appropriate names.",
            ),
        )
    child_query = _Query(
        sub.query.select,
        rel["childSObject"],
        sub.query.object_pos,
        sub.query.where,
        sub.query.order,
        sub.query.limit,
        sub.query.offset,
    )
    rows = ctx.children(rel["childSObject"], rel["field"]).get(record.get("Id"), [])
    child_schema, selected, items = _select(child_query, resolver, ctx, rows)
    if any(not isinstance(i, _Path) for i in items):
        raise SoqlError("MALFORMED_QUERY", "Nested queries support plain fields only")
    if not selected:
        return {rel["relationshipName"]: None}
    return {
        rel["relationshipName"]: {
            "totalSize": len(selected),
            "done": True,
            "records": [_shape(r, child_schema, items, resolver, ctx) for r in selected],
        }
    }


def _rows(org: OrgLike, name: str, include_deleted: bool) -> list[dict[str, Any]]:
    rows = list(org.records(name))
    deleted = getattr(org, "deleted_records", None)
    if include_deleted and deleted is not None:
        rows.extend(deleted(name))
    return rows


def run_query(
    soql: str, org: OrgLike, api_version: str, *, include_deleted: bool = False
) -> QueryResult:
    """Run one SOQL query against the org; raises SoqlError the way the REST API reports it.

    `include_deleted` is `queryAll`: the recycle bin's records count too.
    """
    query = _parse(soql)
    resolver = _Resolver(org, soql)
    ctx = _Context(org, api_version)
    schema = resolver.schema(query.object_name, query.object_pos)
    rows = _rows(org, schema.name, include_deleted)
    counts = [i for i in query.select if isinstance(i, _Count)]
    if counts and len(counts) != len(query.select):
        raise SoqlError(
            "MALFORMED_QUERY",
            _located(
                soql,
                query.select[0].pos,
                "Field must be grouped or aggregated: "
                + next(i.path[-1] for i in query.select if isinstance(i, _FieldRef)),
            )
            if any(isinstance(i, _FieldRef) for i in query.select)
            else "COUNT() must be the only element in the SELECT list.",
        )
    if counts:
        return _aggregate(query, counts, schema, resolver, ctx, rows)
    _, selected, items = _select(query, resolver, ctx, rows)
    records = [_shape(r, schema, items, resolver, ctx) for r in selected]
    touch = getattr(org, "touch", None)
    if query.for_clause and touch is not None:
        stamp = "LastViewedDate" if query.for_clause == "VIEW" else "LastReferencedDate"
        touch(schema.name, [r["Id"] for r in selected if r.get("Id")], stamp)
    return QueryResult(schema.name, records, aggregate=False, total_size=len(records))


def _aggregate(
    query: _Query,
    counts: list[_Count],
    schema: _Schema,
    resolver: _Resolver,
    ctx: _Context,
    rows: list[dict[str, Any]],
) -> QueryResult:
    if query.order:
        raise SoqlError(
            "MALFORMED_QUERY", "ORDER BY is not supported on an aggregate query without GROUP BY"
        )
    plain_count = [c for c in counts if c.field is None]
    if plain_count and len(counts) > 1:
        raise SoqlError("MALFORMED_QUERY", "COUNT() must be the only element in the SELECT list.")
    no_limit = _Query(query.select, query.object_name, query.object_pos, query.where)
    _, selected, _ = _select(no_limit, resolver, ctx, rows)
    if plain_count:
        # COUNT() answers in totalSize; LIMIT caps the count, as on a real org.
        total = len(selected)
        if query.limit is not None:
            total = min(total, query.limit)
        return QueryResult(schema.name, [], aggregate=False, total_size=total)
    row: dict[str, Any] = {"attributes": {"type": "AggregateResult"}}
    for n, c in enumerate(counts):
        assert c.field is not None
        path = resolver.resolve(schema, c.field)
        value = sum(1 for r in selected if ctx.value(r, path) is not None)
        row[c.alias or f"expr{n}"] = value
    return QueryResult("AggregateResult", [row], aggregate=True, total_size=1)


def _column(f: dict[str, Any] | None, name: str, display: str, **over: Any) -> dict[str, Any]:
    t = f["type"] if f else None
    column = {
        "aggregate": False,
        "apexType": _APEX_TYPES.get(t, "String") if t else None,
        "booleanType": t == "boolean",
        "columnName": name,
        "custom": bool(f and f.get("custom")),
        "displayName": display,
        "foreignKeyName": None,
        "insertable": bool(f and f.get("createable")),
        "joinColumns": [],
        "numberType": t in _NUMBER,
        "textType": t in _TEXT and t not in ("id", "reference"),
        "updatable": bool(f and f.get("updateable")),
    }
    column.update(over)
    return column


def column_metadata(soql: str, org: OrgLike) -> dict[str, Any]:
    """The `query?q=…&columns=true` answer (what the Salesforce CLI asks before a query)."""
    query = _parse(soql)
    resolver = _Resolver(org, soql)
    schema = resolver.schema(query.object_name, query.object_pos)
    columns: list[dict[str, Any]] = []
    joined: dict[str, dict[str, Any]] = {}
    id_selected = False
    expr = 0
    for item in query.select:
        if isinstance(item, _Count):
            if item.field is not None:
                resolver.resolve(schema, item.field)
            name = item.alias or f"expr{expr}"
            expr += 1
            inner = ".".join(item.field.path) if item.field else ""
            columns.append(
                _column(
                    None,
                    name,
                    f"COUNT({inner})",
                    aggregate=True,
                    apexType="Integer",
                    numberType=True,
                )
            )
            continue
        if isinstance(item, _SubQuery):
            rel = schema.children.get(item.query.object_name.lower())
            name = rel["relationshipName"] if rel else item.query.object_name
            columns.append(_column(None, name, name, apexType=None))
            continue
        path = resolver.resolve(schema, item)
        if path.rel is None:
            id_selected = id_selected or path.field["type"] == "id"
            columns.append(_column(path.field, path.field["name"], path.field["name"]))
            continue
        rel_name = path.rel["relationshipName"]
        if rel_name not in joined:
            joined[rel_name] = _column(None, rel_name, rel_name, apexType=None)
            columns.append(joined[rel_name])
        joined[rel_name]["joinColumns"].append(
            _column(path.field, path.field["name"], path.display)
        )
    return {
        "columnMetadata": columns,
        "entityName": schema.name,
        "groupBy": False,
        "idSelected": id_selected,
        "keyPrefix": schema.describe.get("keyPrefix"),
    }
