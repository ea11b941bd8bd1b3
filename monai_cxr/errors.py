"""The one exception type for a user's mistake.

The CLI turns it into a single line (``monai-cxr: error: ...``) and a non-zero exit,
without a traceback. Library callers can catch it as a ``ValueError``.
"""


class CxrError(ValueError):
    """Bad input from the user: the message names the bad value and what is allowed."""
