"""One exception type for mistakes a user can fix; the CLI turns it into one line and exit code 2."""
from __future__ import annotations


class EvopruneError(Exception):
    """A user-facing error: bad input, missing file, impossible request.

    The message must say what is wrong and how to fix it, in one line.
    Anything else that escapes is a bug and shows a traceback (with ``--debug``).
    """


def require(cond: bool, message: str) -> None:
    """Raise :class:`EvopruneError` with ``message`` unless ``cond`` holds."""
    if not cond:
        raise EvopruneError(message)
