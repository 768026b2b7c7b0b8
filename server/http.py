"""Streamable HTTP transport with the safety rules of DESIGN §9.

Bound to a loopback address by default with DNS-rebinding protection on (the Host and Origin
headers must name the bound address). Bound to anything else it refuses to start unless a
bearer token is configured (``PLANEGATE_TOKEN``); once a token is configured every request must
carry ``Authorization: Bearer <token>``, loopback or not.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


class TransportRefused(Exception):
    """The transport settings are unsafe; nothing was started."""


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def security_settings(host: str, extra_hosts: list[str]) -> TransportSecuritySettings:
    """Host and Origin must name the bound address (any port), or one the user added."""
    names = {host, *extra_hosts}
    if is_loopback(host):
        names |= {"127.0.0.1", "localhost", "::1"}
    bases = sorted({f"[{n}]" if ":" in n and not n.startswith("[") else n for n in names})
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[*bases, *(f"{b}:*" for b in bases)],
        allowed_origins=[f"{scheme}://{b}{port}" for b in bases for scheme in ("http", "https") for port in ("", ":*")],
    )


class BearerAuth:
    """ASGI middleware: every HTTP request must carry the configured bearer token."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                body = b'{"error": "missing or wrong bearer token; send Authorization: Bearer $PLANEGATE_TOKEN"}'
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def http_app(server: MCPServer, host: str, token: str | None, extra_hosts: list[str]) -> Any:
    """The ASGI app to serve, or ``TransportRefused`` when the settings are unsafe."""
    if not is_loopback(host) and not token:
        raise TransportRefused(
            f"refusing to serve on {host!r} without a bearer token: set PLANEGATE_TOKEN (clients then send "
            "'Authorization: Bearer <token>'), or bind to 127.0.0.1"
        )
    app = server.streamable_http_app(transport_security=security_settings(host, extra_hosts), host=host)
    return BearerAuth(app, token) if token else app


def serve_http(server: MCPServer, host: str, port: int, token: str | None, extra_hosts: list[str]) -> None:
    import uvicorn

    app = http_app(server, host, token, extra_hosts)
    uvicorn.run(app, host=host, port=port, log_level="warning")
