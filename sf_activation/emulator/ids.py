"""Salesforce record ids: 15-character case-sensitive ids and their 18-character form.

An id is a 3-character key prefix (the object), a 2-character pod, a reserved `0`, a
9-character base-62 record number, and (18-character form) a 3-character suffix that
encodes which of the first 15 characters are upper case, so the id survives
case-insensitive tools.
"""

from __future__ import annotations

import re

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SUFFIX_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_ID_RE = re.compile(r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-5]{3})?$")
# A pod marker like the `Da`/`9H` seen in real ids; fixed so ids look alike across runs.
_POD = "5e"

# Key prefixes of standard objects (Salesforce's own, stable across orgs).
STANDARD_KEY_PREFIXES = {
    "Account": "001",
    "Contact": "003",
    "User": "005",
    "Opportunity": "006",
    "Organization": "00D",
    "Lead": "00Q",
    "Case": "500",
    "Task": "00T",
    "Event": "00U",
}


def _chunk_char(c: str) -> str:
    # Unrolled on purpose: ids are minted on the hot write path.
    return _SUFFIX_CHARS[
        ("A" <= c[0] <= "Z")
        | ("A" <= c[1] <= "Z") << 1
        | ("A" <= c[2] <= "Z") << 2
        | ("A" <= c[3] <= "Z") << 3
        | ("A" <= c[4] <= "Z") << 4
    ]


def suffix(id15: str) -> str:
    """The 3-character case-safety suffix of a 15-character id."""
    return _chunk_char(id15[0:5]) + _chunk_char(id15[5:10]) + _chunk_char(id15[10:15])


_CHUNK_CACHE: dict[str, str] = {}


def make_id(prefix: str, number: int) -> str:
    """An 18-character id for record `number` of the object with key prefix `prefix`."""
    digits = ""
    n = number
    while n:
        n, r = divmod(n, 62)
        digits = _BASE62[r] + digits
    id15 = prefix + _POD + "0" + digits.rjust(9, "0")[-9:]
    # The first two chunks rarely change from one id to the next: remember them.
    head = id15[:10]
    head_suffix = _CHUNK_CACHE.get(head)
    if head_suffix is None:
        if len(_CHUNK_CACHE) > 10_000:
            _CHUNK_CACHE.clear()
        head_suffix = _CHUNK_CACHE[head] = _chunk_char(id15[0:5]) + _chunk_char(id15[5:10])
    return id15 + head_suffix + _chunk_char(id15[10:15])


def normalize(value: object) -> str | None:
    """The 18-character form of a well-formed 15/18-character id, else None.

    The first 15 characters decide; a given suffix is recomputed, as Salesforce does.
    """
    if not isinstance(value, str) or not _ID_RE.match(value):
        return None
    id15 = value[:15]
    return id15 + suffix(id15)
