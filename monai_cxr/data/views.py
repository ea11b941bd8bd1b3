"""The ``view`` column and ``--view``: one vocabulary for every source.

Sources write ``PA`` or ``AP`` for a frontal image of known projection, ``FRONTAL`` for a
frontal one of unknown projection, ``LATERAL`` (CheXpert) or ``LL``/``RL`` for a lateral,
and a user's table its own value (upper case; ``UNKNOWN`` without ``--view-col``).
``--view frontal`` keeps PA, AP and FRONTAL; ``lateral`` keeps the laterals; any other
value keeps the rows with exactly that view.
"""

from __future__ import annotations

import pandas as pd

from monai_cxr.errors import CxrError

CHOICES = ("all", "frontal", "lateral", "PA", "AP")
FRONTAL = ("PA", "AP", "FRONTAL")
LATERAL = ("LATERAL", "LL", "RL")


def select_view(index: pd.DataFrame, view: str, where: str = "the dataset") -> pd.DataFrame:
    """The rows of ``index`` showing ``view``; a CxrError naming the views present when none do."""
    if view == "all":
        return index
    values = index["view"].astype(str).str.upper()
    wanted = {"frontal": FRONTAL, "lateral": LATERAL}.get(view.lower(), (view.upper(),))
    kept = index[values.isin(wanted).to_numpy()]
    if kept.empty:
        raise CxrError(f"no {view} images in {where}; views present: {', '.join(sorted(values.unique()))}")
    return kept.reset_index(drop=True)
