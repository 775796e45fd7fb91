"""`/services/Soap/…`: the SOAP API endpoints answer in SOAP faults, as SOAP clients expect.

The emulator does not implement the SOAP API. Its clients (simple-salesforce's
`SalesforceLogin`, which posts a `login` envelope to `/services/Soap/u/XX.X`, and any
partner or enterprise WSDL client) parse an XML envelope whatever the status, so a
REST-style JSON 401 leaves them with a parse error instead of a reason. A real org
answers every failed SOAP call with HTTP 500 and a `soapenv:Fault` whose `faultcode`
is `sf:<ExceptionCode>` ("Error Handling" in the SOAP API Developer Guide); this
endpoint does the same:

- no or an unknown session (`SessionHeader/sessionId`) on a call other than `login`:
  `sf:INVALID_SESSION_ID`, as a real org answers;
- `login`, or any call with a valid session: `sf:API_DISABLED_FOR_ORG` in a LoginFault /
  UnexpectedErrorFault, saying the SOAP API is not served here and OAuth is.
"""

from __future__ import annotations

import re
from xml.sax.saxutils import escape

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from sf_activation.emulator.context import Context

_SESSION_RE = re.compile(rb"<(?:\w+:)?sessionId>\s*([^<\s]+)\s*</(?:\w+:)?sessionId>")
_LOGIN_RE = re.compile(rb"<(?:\w+:)?login[\s>]")
UNSUPPORTED = (
    "The SOAP API is not available in this org (the Salesforce emulator serves the REST "
    "and Bulk APIs). Log in with OAuth: POST /services/oauth2/token (grant_type=password "
    "works with any credentials unless the emulator fixes them)."
)


def soap_fault(code: str, message: str, fault_type: str = "UnexpectedErrorFault") -> Response:
    text = escape(f"{code}: {message}")
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:sf="urn:fault.partner.soap.sforce.com" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        "<soapenv:Body><soapenv:Fault>"
        f"<faultcode>sf:{code}</faultcode><faultstring>{text}</faultstring>"
        f'<detail><sf:{fault_type} xsi:type="sf:{fault_type}">'
        f"<sf:exceptionCode>{code}</sf:exceptionCode>"
        f"<sf:exceptionMessage>{escape(message)}</sf:exceptionMessage>"
        f"</sf:{fault_type}></detail>"
        "</soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    )
    return Response(body.encode(), status_code=500, media_type="text/xml; charset=utf-8")


def soap_endpoint(ctx: Context) -> ASGIApp:
    """The ASGI app answering every `/services/Soap/…` request."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        body = await request.body() if scope["method"] == "POST" else b""
        if _LOGIN_RE.search(body):
            response = soap_fault("API_DISABLED_FOR_ORG", UNSUPPORTED, "LoginFault")
        else:
            found = _SESSION_RE.search(body)
            token = found.group(1).decode("utf-8", "replace") if found else None
            if token is None or ctx.token_state(token) != "ok":
                response = soap_fault(
                    "INVALID_SESSION_ID",
                    "Invalid Session ID found in SessionHeader: Illegal Session",
                )
            else:
                response = soap_fault("API_DISABLED_FOR_ORG", UNSUPPORTED)
        await response(scope, receive, send)

    return app
