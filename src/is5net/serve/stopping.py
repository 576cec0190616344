"""How the server stops with requests in flight: each one finishes, or is answered 503 in JSON, in time.

On Ctrl-C uvicorn stops accepting, waits ``timeout_graceful_shutdown`` seconds for the requests in flight,
then cancels them: a cancelled request gets uvicorn's plain-text 500 and the log a ``CancelledError``
traceback. So the server (:class:`.app.StoppableServer`) calls :meth:`Stopping.begin` first, with a grace
that ends before uvicorn's: a request still waiting for the worker is answered 503 at once (its job never
runs), one whose job runs or whose body still streams in gets until the grace ends, then 503.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Optional

from .errors import ApiError


class ServerStopping(ApiError):
    """The 503 of a request the stopping server could not finish."""

    def __init__(self) -> None:
        super().__init__(
            503,
            "the server is stopping (Ctrl-C): this request was not finished; retry once it runs again",
            headers={"Connection": "close", "Retry-After": "1"},
        )


class Stopping:
    """Whether the server is stopping, and until when requests in flight may still be answered."""

    def __init__(self) -> None:
        self._event: Optional[asyncio.Event] = None  # made on the event loop, by the first request that waits
        self.deadline: Optional[float] = None  # time.monotonic() after which in-flight work is answered 503

    @property
    def started(self) -> bool:
        return self.deadline is not None

    def begin(self, grace_s: float) -> None:
        """Called on the event loop when the server starts to stop."""
        self.deadline = time.monotonic() + max(0.0, grace_s)
        self._wake().set()

    def _wake(self) -> asyncio.Event:
        if self._event is None:
            self._event = asyncio.Event()
        return self._event

    async def _begun(self) -> None:
        await self._wake().wait()

    async def _grace_over(self) -> None:
        await self._begun()
        await asyncio.sleep(max(0.0, self.deadline - time.monotonic()))

    async def race(self, work: Awaitable, drop_at_stop: bool = False) -> Any:
        """The result of ``work``, unless the server stops first: then 503, at once when ``drop_at_stop``,
        else when the grace ends (``work`` is cancelled then)."""
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self._begun() if drop_at_stop else self._grace_over())
        try:
            done, _ = await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            task.cancel()
            raise
        finally:
            stop.cancel()
        if task in done:
            return task.result()
        task.cancel()
        raise ServerStopping()
