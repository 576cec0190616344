"""Ctrl-C bookkeeping shared by the command line and the commands (no imports: the CLI loads it first).

The CLI installs :func:`on_sigint` while a command runs: Python's own behaviour (``KeyboardInterrupt``), plus
a note, so that an interrupt a library swallowed (in a callback, a worker) still ends the run as
interrupted. A server, whose normal way to stop is Ctrl-C, says so with :func:`stopped_on_purpose`.
"""

_pending = False


def on_sigint(signum, frame) -> None:
    global _pending
    _pending = True
    raise KeyboardInterrupt


def reset() -> None:
    global _pending
    _pending = False


def pending() -> bool:
    """Whether Ctrl-C was pressed since :func:`reset` and not taken as the command's normal stop."""
    return _pending


def stopped_on_purpose() -> None:
    """The Ctrl-C seen so far was the command's normal way to stop (``is5net serve``), not an interruption."""
    reset()
