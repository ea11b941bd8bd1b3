"""The result section of a cell's ``docs/README.md``: "not run yet" until the run writes its AUC there.

Torch-free: ``generate`` writes the section; the run's ``RunRecorder`` fills it in just
before it writes ``run.json``.
"""

from __future__ import annotations

import re

__all__ = ["BEGIN", "END", "NOT_RUN", "result_section", "with_result"]

BEGIN = "<!-- monai-cxr result: written by the run -->"
END = "<!-- end of result -->"
NOT_RUN = "Not run yet. When the cell finishes, `run.json` holds its record and this section its validation AUC."
_SECTION = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)


def result_section(body: str = NOT_RUN) -> str:
    return f"{BEGIN}\n{body}\n{END}"


def with_result(readme: str, body: str) -> str:
    """``readme`` with its result section replaced by ``body`` (unchanged if it has none)."""
    return _SECTION.sub(lambda _: result_section(body), readme, count=1)
