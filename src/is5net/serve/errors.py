"""The one error type of the HTTP API: a status and a one-line message, answered as ``{"error": "..."}``."""

from __future__ import annotations

from typing import Optional

from starlette.responses import JSONResponse


class ApiError(Exception):
    """A request the server refuses, with the HTTP status and a one-line message that says what to do."""

    def __init__(self, status: int, message: str, headers: Optional[dict[str, str]] = None):
        super().__init__(message)
        self.status = int(status)
        self.message = " ".join(str(message).split())  # one line, whatever the cause's text held
        self.headers = dict(headers or {})


def error_response(status: int, message: str, headers: Optional[dict] = None) -> JSONResponse:
    """The body every refusal has, from the middleware, the exception handlers and the routes alike."""
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status, headers=headers)
