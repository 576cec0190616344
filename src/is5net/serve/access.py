"""Who may talk to the server: the bind rule of ``is5net serve``, the Host check and the token (:class:`Guard`).

A server on the loopback answers only to loopback Host names; one reachable from other machines needs a
token, or the user's explicit ``--insecure``.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
from typing import Optional

from ..errors import IS5NetError
from .errors import error_response

TOKEN_ENV = "IS5NET_SERVE_TOKEN"
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
LABEL_STUDIO_PREFIX = "/label-studio"  # `is5net serve --label-studio` answers there (serve/label_studio.py)


def is_loopback(host: str) -> bool:
    """Whether a bind address (``--host``) is this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_warning(host: str, token: Optional[str], insecure: bool) -> Optional[str]:
    """The warning to print for serving on ``host``, if any; a non-loopback one without a token (or
    ``insecure``), or a token too short to guess hard, is refused (:class:`IS5NetError`)."""
    if token is not None:
        check_token(token)
    if is_loopback(host):
        return None
    if token is None and not insecure:
        raise IS5NetError(
            f"--host {host} lets other machines reach the server: give --token T (or "
            f"${TOKEN_ENV}) so that requests must carry it, or --insecure to serve without one"
        )
    if token is None:
        return f"serving on {host} WITHOUT a token (--insecure): anyone who can reach this port can use it"
    return f"serving on {host}: reachable from other machines; API requests need the token"


def check_token(token: str) -> None:
    """Refuse a token too short to guess hard, or one no request could ever carry (:class:`IS5NetError`).

    An HTTP header arrives as latin-1 bytes with the spaces around its value stripped, so a token with
    characters outside printable ASCII, or with spaces at either end, never matches: every request would
    get 401 from a server that started without a word.
    """
    how = 'a random one: python -c "import secrets; print(secrets.token_urlsafe())"'
    if len(token) < 8:
        raise IS5NetError(f"--token: use at least 8 characters ({how})")
    bad = next((c for c in token if not " " <= c <= "~"), None)
    if bad is not None:
        raise IS5NetError(
            f"--token: {ascii(bad)} is not a printable ASCII character, and a request header could never "
            f"carry it; use letters, digits and -._~+/ ({how})"
        )
    if token != token.strip():
        raise IS5NetError(
            "--token: it begins or ends with a space, which a request header loses on the way, so no "
            f"request could match it ({how})"
        )


def loopback_host(host: str) -> bool:
    """Whether a request's Host header (a name, maybe with a port) names the loopback."""
    name = host.strip()
    if name.startswith("["):
        name = name[1:].split("]", 1)[0]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Guard:
    """ASGI middleware: the Host check (loopback binds) and the token (``/api/``), before any body is read."""

    def __init__(self, app, options):
        self.app, self.options = app, options

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self.refusal(scope)
        if refusal is not None:
            return await refusal(scope, receive, send)
        await self.app(scope, receive, send)

    def refusal(self, scope):
        """The answer that turns the request away, or None to let it through."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.options.loopback_only and not loopback_host(headers.get("host", "")):
            # A page on another site can make a browser send requests to 127.0.0.1 under its own host name
            # (DNS rebinding); a server on the loopback answers only to its loopback names.
            return error_response(400, "Host header is not a loopback name (this server listens on the loopback only)")
        path = scope.get("path", "")
        if self.options.token and scope.get("method") != "OPTIONS":
            given = headers.get("authorization", "")
            if path.startswith("/api/") and not token_matches(given, self.options.token):
                return error_response(
                    401,
                    "missing or wrong token: send 'Authorization: Bearer <token>' (the "
                    "token given to is5net serve --token)",
                    {"WWW-Authenticate": "Bearer"},
                )
            if path.startswith(LABEL_STUDIO_PREFIX + "/") and not token_matches(given, self.options.token, basic=True):
                return error_response(
                    401,
                    "missing or wrong token: in Label Studio's model settings choose Basic Authentication, "
                    "any user name, and the token given to is5net serve --token as the password",
                    {"WWW-Authenticate": 'Basic realm="is5net"'},
                )
        return None


def token_matches(header: str, token: str, basic: bool = False) -> bool:
    """Whether an Authorization header carries ``token``: ``Bearer <token>``, or with ``basic`` also HTTP Basic
    with ``token`` as the password (Label Studio can send only Basic to a model server; any user name)."""
    if hmac.compare_digest(header.encode("latin-1"), f"Bearer {token}".encode("latin-1")):
        return True
    scheme, _, value = header.partition(" ")
    if not basic or scheme.lower() != "basic":
        return False
    try:
        _user, _, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return False
    return hmac.compare_digest(password.encode("utf-8"), token.encode("utf-8"))
