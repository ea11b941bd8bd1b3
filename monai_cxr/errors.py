"""The one exception type for a user's mistake, and how user text is echoed in its message.

The CLI turns a :class:`CxrError` into a single line (``monai-cxr: error: ...``) and exit
status 2, without a traceback; an ``OSError`` (a full disk, a read-only or unreadable path)
becomes one line naming the path and exit status 1. Library callers can catch CxrError as a
``ValueError``.
"""

SHOWN_CHARS = 40


class CxrError(ValueError):
    """Bad input from the user: the message names the bad value and what is allowed."""


def shown(value, limit: int = SHOWN_CHARS) -> str:
    """``repr`` of a user's value, cut to ``limit`` characters: a pasted row or a huge label stays readable.

    ``repr`` also makes invisible characters (a BOM, a zero-width space, a trailing blank) visible.
    """
    text = str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"
