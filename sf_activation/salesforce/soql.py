"""SOQL value quoting: simple-salesforce's `format_soql`, imported when a query is built.

`simple_salesforce.format` itself is small, but importing it runs the package's
`__init__`, which imports the whole simple-salesforce client (zeep, httpx, requests: about
0.3 s). A sync with nothing to send runs no SOQL query, so it should not pay for that.
"""

from __future__ import annotations

from typing import Any


def format_soql(query: str, *args: Any, **kwargs: Any) -> str:
    """Insert values quoted for SOQL into a format string (`simple_salesforce.format_soql`)."""
    from simple_salesforce.format import format_soql as _format_soql

    return _format_soql(query, *args, **kwargs)
