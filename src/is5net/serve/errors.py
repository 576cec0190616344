"""The one error type of the HTTP API: a status and a one-line message, answered as ``{"error": "..."}``."""

from __future__ import annotations

from typing import Optional


class ApiError(Exception):
    """A request the server refuses, with the HTTP status and a one-line message that says what to do."""

    def __init__(self, status: int, message: str, headers: Optional[dict[str, str]] = None):
        super().__init__(message)
        self.status = int(status)
        self.message = " ".join(str(message).split())  # one line, whatever the cause's text held
        self.headers = dict(headers or {})
