"""SOSL for the emulator's `search` and `parameterizedSearch` resources.

Supported, after "SOSL Syntax" in the SOQL and SOSL Reference:

    FIND {terms} [IN ALL|NAME|EMAIL|PHONE|SIDEBAR FIELDS]
        [RETURNING Object [(fields [WHERE …] [ORDER BY …] [LIMIT n] [OFFSET n])], …]
        [WITH …] [LIMIT n] [UPDATE TRACKING|VIEWSTAT]

Terms: words, "quoted phrases", `*` and `?` wildcards, AND / OR / AND NOT and
parentheses; words next to each other must all match (SOSL's implicit AND). A word
matches a whole word of a field value, case-insensitively, the way the search index
tokenises text; phone fields also match on their digits. Matching spans all the
searched fields of a record. The inner WHERE / ORDER BY / LIMIT of a RETURNING object
are SOQL: they run through `soql.run_query` over the matched records only. WITH
clauses are accepted and ignored (no snippets, divisions or networks here).

Results are `{"searchRecords": [...]}`: for each object in RETURNING order, its matches
with `attributes` and the requested fields (just `Id` without a field list).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sf_activation.emulator import soql

MAX_RESULTS = 2000  # SOSL's overall default and maximum LIMIT
_TEXT_TYPES = frozenset(
    {"string", "textarea", "email", "phone", "url", "picklist", "multipicklist", "combobox"}
)
_SCOPES = ("ALL", "NAME", "EMAIL", "PHONE", "SIDEBAR")
_WORD_RE = re.compile(r"[\w@.'+-]+", re.UNICODE)
_SPLIT_RE = re.compile(r"[^\w]+", re.UNICODE)


class SoslError(Exception):
    """A search the org refuses, with the REST error code it answers."""

    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message


# --------------------------------------------------------------------------- terms


@dataclass
class _Word:
    pattern: re.Pattern[str]


@dataclass
class _Phrase:
    words: list[re.Pattern[str]]


@dataclass
class _Op:
    op: str  # AND, OR, NOT (AND NOT: args[0] and not args[1])
    args: list[Any]


def _word_pattern(text: str) -> re.Pattern[str]:
    out = []
    for ch in text:
        if ch == "*":
            out.append(r"\w*")
        elif ch == "?":
            out.append(r"\w")
        else:
            out.append(re.escape(ch.lower()))
    return re.compile("^" + "".join(out) + "$")


def _term_tokens(text: str) -> list[tuple[str, str]]:
    """(kind, value): word, phrase, AND, OR, NOT, (, )."""
    tokens: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in "()":
            tokens.append((ch, ch))
            i += 1
        elif ch == '"':
            end = text.find('"', i + 1)
            if end < 0:
                raise SoslError("MALFORMED_SEARCH", f"Unterminated phrase in search term: {text}")
            tokens.append(("phrase", text[i + 1 : end]))
            i = end + 1
        else:
            j = i
            word = []
            while j < n and not text[j].isspace() and text[j] not in '()"':
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                word.append(text[j])
                j += 1
            value = "".join(word)
            upper = value.upper()
            if upper in ("AND", "OR", "NOT"):
                tokens.append((upper, upper))
            else:
                tokens.append(("word", value))
            i = j
    return tokens


class _TermParser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _term_tokens(text)
        self.i = 0

    def _peek(self) -> str | None:
        return self.tokens[self.i][0] if self.i < len(self.tokens) else None

    def parse(self) -> Any:
        if not self.tokens:
            raise SoslError("MALFORMED_SEARCH", "No search term found. Search term is empty.")
        node = self._or()
        if self._peek() is not None:
            raise SoslError("MALFORMED_SEARCH", f"Unexpected token in search term: {self.text}")
        return node

    def _or(self) -> Any:
        args = [self._and()]
        while self._peek() == "OR":
            self.i += 1
            args.append(self._and())
        return args[0] if len(args) == 1 else _Op("OR", args)

    def _and(self) -> Any:
        node = self._primary()
        while self._peek() not in (None, "OR", ")"):
            if self._peek() == "AND":
                self.i += 1
                if self._peek() == "NOT":
                    self.i += 1
                    node = _Op("NOT", [node, self._primary()])
                    continue
            node = _Op("AND", [node, self._primary()])
        return node

    def _primary(self) -> Any:
        kind = self._peek()
        if kind == "(":
            self.i += 1
            node = self._or()
            if self._peek() != ")":
                raise SoslError("MALFORMED_SEARCH", f"Unbalanced parentheses in: {self.text}")
            self.i += 1
            return node
        if kind == "word":
            value = self.tokens[self.i][1]
            self.i += 1
            if len(value.replace("*", "").replace("?", "")) < 2:
                raise SoslError(
                    "INVALID_SEARCH", f"search term must be longer than one character: {value}"
                )
            return _Word(_word_pattern(value))
        if kind == "phrase":
            value = self.tokens[self.i][1]
            self.i += 1
            words = [w for w in _SPLIT_RE.split(value) if w]
            if not words:
                raise SoslError("MALFORMED_SEARCH", f"Empty phrase in search term: {self.text}")
            return _Phrase([_word_pattern(w) for w in words])
        raise SoslError("MALFORMED_SEARCH", f"Unexpected token in search term: {self.text}")


def parse_terms(text: str) -> Any:
    return _TermParser(text).parse()


def _field_words(value: Any, field_type: str) -> list[list[str]]:
    """The word sequences the index keeps for one field value."""
    text = str(value)
    out = [[w for w in _SPLIT_RE.split(text.lower()) if w]]
    if field_type == "email":
        out.append([text.lower()])
    elif field_type == "phone":
        digits = re.sub(r"\D", "", text)
        if digits:
            out.append([digits])
    return out


def _matches(node: Any, sequences: list[list[str]]) -> bool:
    if isinstance(node, _Word):
        return any(node.pattern.match(w) for seq in sequences for w in seq)
    if isinstance(node, _Phrase):
        k = len(node.words)
        for seq in sequences:
            for start in range(len(seq) - k + 1):
                if all(p.match(seq[start + j]) for j, p in enumerate(node.words)):
                    return True
        return False
    if node.op == "AND":
        return all(_matches(a, sequences) for a in node.args)
    if node.op == "OR":
        return any(_matches(a, sequences) for a in node.args)
    return _matches(node.args[0], sequences) and not _matches(node.args[1], sequences)


# --------------------------------------------------------------------------- statement


@dataclass
class Returning:
    object_name: str
    fields: list[str] = field(default_factory=list)
    tail: str = ""  # WHERE / ORDER BY / LIMIT / OFFSET, as SOQL text
    limit: int | None = None


@dataclass
class Search:
    terms: Any
    scope: str = "ALL"
    returning: list[Returning] = field(default_factory=list)
    limit: int = MAX_RESULTS


def _split_top(text: str, sep: str = ",") -> Iterator[str]:
    """Split on sep outside parentheses and quotes."""
    depth, quote, start = 0, False, 0
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == "'":
                quote = False
        elif ch == "'":
            quote = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == sep and depth == 0:
            yield text[start:i]
            start = i + 1
        i += 1
    yield text[start:]


_FIND_RE = re.compile(r"^\s*FIND\s*\{((?:\\.|[^\\}])*)\}(.*)$", re.IGNORECASE | re.DOTALL)
_IN_RE = re.compile(r"^\s*IN\s+(\w+)\s+FIELDS\b(.*)$", re.IGNORECASE | re.DOTALL)
_RETURNING_RE = re.compile(r"^\s*RETURNING\b(.*)$", re.IGNORECASE | re.DOTALL)
_TAIL_RE = re.compile(r"\b(WITH|LIMIT|UPDATE|OFFSET)\b", re.IGNORECASE)
_LIMIT_RE = re.compile(r"\bLIMIT\s+(\d+)", re.IGNORECASE)
_INNER_LIMIT_RE = re.compile(r"\bLIMIT\s+(\d+)\s*$", re.IGNORECASE)
_OBJECT_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*$", re.DOTALL)
_CLAUSE_RE = re.compile(r"\b(WHERE|ORDER\s+BY|LIMIT|OFFSET|USING)\b", re.IGNORECASE)


def _returning_end(text: str) -> int:
    """Where the RETURNING list ends: the first WITH/LIMIT/UPDATE outside parentheses."""
    depth, quote = 0, False
    for i, ch in enumerate(text):
        if quote:
            quote = ch != "'"
        elif ch == "'":
            quote = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0 and _TAIL_RE.match(text, i) and (i == 0 or not text[i - 1].isalnum()):
            return i
    return len(text)


def parse_returning(item: str) -> Returning:
    m = _OBJECT_RE.match(item)
    if not m:
        raise SoslError("MALFORMED_SEARCH", f"Invalid RETURNING clause: {item.strip()}")
    inner = (m.group(2) or "").strip()
    if not inner:
        return Returning(m.group(1))
    clause = _CLAUSE_RE.search(inner)
    field_text = inner[: clause.start()] if clause else inner
    tail = inner[clause.start() :].strip() if clause else ""
    fields = [f.strip() for f in field_text.split(",") if f.strip()]
    if not fields:
        raise SoslError("MALFORMED_SEARCH", f"RETURNING {m.group(1)} needs a field list")
    return Returning(m.group(1), fields, tail)


def parse_search(text: str) -> Search:
    """A SOSL statement → Search; SoslError in Salesforce's words when it is not one."""
    m = _FIND_RE.match(text or "")
    if not m:
        raise SoslError(
            "MALFORMED_SEARCH",
            "No search term found. The search term must be enclosed in braces.",
        )
    search = Search(parse_terms(m.group(1)))
    rest = m.group(2)
    scope = _IN_RE.match(rest)
    if scope:
        word = scope.group(1).upper()
        if word not in _SCOPES:
            raise SoslError("MALFORMED_SEARCH", f"Invalid search scope: IN {word} FIELDS")
        search.scope = word
        rest = scope.group(2)
    returning = _RETURNING_RE.match(rest)
    if returning:
        body = returning.group(1)
        end = _returning_end(body)
        search.returning = [parse_returning(p) for p in _split_top(body[:end]) if p.strip()]
        rest = body[end:]
    limit = _LIMIT_RE.search(rest)
    if limit:
        search.limit = min(MAX_RESULTS, int(limit.group(1)))
    return search


# --------------------------------------------------------------------------- evaluation


def _searched_fields(describe: dict[str, Any], scope: str) -> list[tuple[str, str]]:
    out = []
    for f in describe.get("fields") or ():
        t = f.get("type")
        if t not in _TEXT_TYPES:
            continue
        name_like = bool(f.get("nameField")) or f["name"] in ("FirstName", "LastName", "Company")
        if (
            scope == "ALL"
            or (scope == "NAME" and name_like)
            or (scope == "EMAIL" and t == "email")
            or (scope == "PHONE" and t == "phone")
            or (scope == "SIDEBAR" and (name_like or t in ("email", "phone")))
        ):
            out.append((f["name"], t))
    return out


class _Only:
    """A duck-typed org (soql.OrgLike) whose `records(name)` are just the matches."""

    def __init__(self, org: Any, name: str, rows: list[dict[str, Any]]) -> None:
        self._org = org
        self._name = name.lower()
        self._rows = rows

    def describe(self, name: str) -> dict[str, Any] | None:
        return self._org.describe(name)

    def records(self, name: str) -> Iterable[dict[str, Any]]:
        return self._rows if name.lower() == self._name else self._org.records(name)

    def get(self, name: str, record_id: str) -> dict[str, Any] | None:
        return self._org.get(name, record_id)


def searchable_objects(org: Any) -> list[str]:
    names = []
    for name in org.object_names():
        describe = org.describe(name) or {}
        if describe.get("searchable", True) and describe.get("queryable", True):
            names.append(name)
    return names


def run_search(search: Search, org: Any, api_version: str) -> list[dict[str, Any]]:
    """The searchRecords of a parsed search against the org."""
    targets = search.returning or [Returning(n) for n in searchable_objects(org)]
    out: list[dict[str, Any]] = []
    for target in targets:
        describe = org.describe(target.object_name)
        if describe is None:
            raise SoslError(
                "INVALID_TYPE",
                f"sObject type '{target.object_name}' is not supported. If you are attempting "
                "to use a custom object, be sure to append the '__c' after the entity name. "
                "Please reference your WSDL or the describe call for the appropriate names.",
            )
        name = describe["name"]
        fields = _searched_fields(describe, search.scope)
        matched = []
        for record in org.records(name):
            sequences: list[list[str]] = []
            for field_name, field_type in fields:
                value = record.get(field_name)
                if value is not None and value != "":
                    sequences.extend(_field_words(value, field_type))
            if sequences and _matches(search.terms, sequences):
                matched.append(record)
        if not matched:
            continue
        select = ", ".join(target.fields) if target.fields else "Id"
        text = f"SELECT {select} FROM {name} {target.tail}".strip()
        try:
            result = soql.run_query(text, _Only(org, name, matched), api_version)
        except soql.SoqlError as error:
            raise SoslError(error.error_code, error.message) from None
        out.extend(result.records)
        if len(out) >= search.limit:
            return out[: search.limit]
    return out


def parameterized(body: dict[str, Any]) -> Search:
    """A parameterizedSearch request (POST body, or GET parameters as a dict) → Search."""
    q = body.get("q")
    if not isinstance(q, str) or not q.strip():
        raise SoslError("MISSING_ARGUMENT", "q: parameter must be specified")
    search = Search(parse_terms(q))
    scope = str(body.get("in") or "ALL").upper()
    if scope not in _SCOPES:
        raise SoslError("INVALID_SEARCH", f"Invalid search scope: {scope}")
    search.scope = scope
    default_fields = [str(f) for f in body.get("fields") or []]
    default_limit = body.get("defaultLimit")
    for spec in body.get("sobjects") or []:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise SoslError("INVALID_SEARCH", "sobjects: each entry needs a name")
        fields = [str(f) for f in spec.get("fields") or default_fields]
        tail = ""
        if spec.get("where"):
            tail += f"WHERE {spec['where']} "
        if spec.get("orderBy"):
            tail += f"ORDER BY {spec['orderBy']} "
        limit = spec.get("limit", default_limit)
        if limit is not None:
            tail += f"LIMIT {int(limit)}"
        search.returning.append(Returning(spec["name"], fields or ["Id"], tail.strip()))
    if body.get("overallLimit") is not None:
        search.limit = min(MAX_RESULTS, int(body["overallLimit"]))
    return search
