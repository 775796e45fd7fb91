"""Warehouse URLs, parsed without importing SQLAlchemy when the URL is DuckDB's.

Importing SQLAlchemy costs about 0.3 s (its package imports the whole engine and SQL
layers), which a DuckDB sync does not otherwise need. A `duckdb://` URL is therefore parsed
here, by the same pattern and rules as `sqlalchemy.engine.make_url`, into a `LiteURL` that
has the part of `sqlalchemy.engine.URL`'s interface the readers use (same attributes, same
`query` values, same rendering); every other URL goes to SQLAlchemy itself.
sf_activation_tests/test_startup.py holds the two to the same answers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, TypeAlias
from urllib.parse import parse_qsl, quote, quote_plus, unquote

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

# Backends parsed here; anything else needs SQLAlchemy (a dialect, a driver) anyway.
LITE_BACKENDS = frozenset({"duckdb"})

# sqlalchemy.engine.url._parse_url's pattern (SQLAlchemy 2.0), verbatim.
_PATTERN = re.compile(
    r"""
        (?P<name>[\w\+]+)://
        (?:
            (?P<username>[^:/]*)
            (?::(?P<password>[^@]*))?
        @)?
        (?:
            (?:
                \[(?P<ipv6host>[^/\?]+)\] |
                (?P<ipv4host>[^/:\?]+)
            )?
            (?::(?P<port>[^/\?]*))?
        )?
        (?:/(?P<database>[^\?]*))?
        (?:\?(?P<query>.*))?
        """,
    re.X,
)


@dataclass(frozen=True)
class LiteURL:
    """What `sqlalchemy.engine.URL` would hold for the same text, without SQLAlchemy."""

    drivername: str
    username: str | None = None
    password: str | None = None
    host: str | None = None
    port: int | None = None
    database: str | None = None
    # As SQLAlchemy's: a repeated key's values become a tuple, in order.
    query: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict)

    def get_backend_name(self) -> str:
        return self.drivername.split("+")[0]

    def set(self, *, query: Mapping[str, str | tuple[str, ...]]) -> LiteURL:
        return replace(self, query=dict(query))

    def render_as_string(self, hide_password: bool = True) -> str:
        """`URL.render_as_string`, character for character."""
        s = self.drivername + "://"
        if self.username is not None:
            s += quote(self.username, safe=" +")
            if self.password is not None:
                s += ":" + ("***" if hide_password else quote(str(self.password), safe=" +"))
            s += "@"
        if self.host is not None:
            s += f"[{self.host}]" if ":" in self.host else self.host
        if self.port is not None:
            s += ":" + str(self.port)
        if self.database is not None:
            s += "/" + self.database
        if self.query:
            s += "?" + "&".join(
                f"{quote_plus(k)}={quote_plus(element)}"
                for k in sorted(self.query)
                for element in _as_list(self.query[k])
            )
        return s

    def __str__(self) -> str:
        return self.render_as_string()

    def __hash__(self) -> int:  # as URL's; the dataclass one would choke on `query`
        return hash(str(self))

    def __repr__(self) -> str:
        return self.render_as_string()


WarehouseURL: TypeAlias = "URL | LiteURL"


def _as_list(value: str | tuple[str, ...]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def parse_url(text: str) -> WarehouseURL:
    """`make_url(text)`, as a `LiteURL` for the backends in `LITE_BACKENDS`.

    Raises what `make_url` raises: SQLAlchemy's `ArgumentError` for text that is no URL
    (SQLAlchemy is imported to say so), `ValueError` for a port that is not a number.
    """
    m = _PATTERN.match(text) if isinstance(text, str) else None
    if m is None or m.group("name").split("+")[0] not in LITE_BACKENDS:
        from sqlalchemy.engine import make_url

        return make_url(text)
    parts = m.groupdict()
    query: dict[str, str | tuple[str, ...]] = {}
    if parts["query"] is not None:
        for key, value in parse_qsl(parts["query"]):
            if key in query:
                query[key] = (*_as_list(query[key]), value)
            else:
                query[key] = value
    username, password = parts["username"], parts["password"]
    return LiteURL(
        drivername=parts["name"],
        username=unquote(username) if username is not None else None,
        password=unquote(password) if password is not None else None,
        host=parts["ipv4host"] or parts["ipv6host"],
        # "" stays "" in SQLAlchemy too, and then fails its int() with the same ValueError.
        port=int(parts["port"]) if parts["port"] is not None else None,
        database=parts["database"],
        query=query,
    )
