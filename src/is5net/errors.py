"""Errors that are the user's to fix: the CLI prints them as one line and exits non-zero."""


class IS5NetError(Exception):
    """A problem with the user's input (file, box, checkpoint, option), with a message that says what to do."""


class CheckpointError(IS5NetError):
    """A file that is not the checkpoint it was given as."""


class BoxError(IS5NetError, ValueError):
    """A box that cannot be used (outside the image, zero area, malformed)."""
