"""The one rule that makes metric names MLflow-safe.

MLflow allows letters, digits, ``_ - . / :`` and spaces in metric names. ``@`` becomes ``_at_``,
``(rel=2)`` becomes ``_rel_2``, and anything else not allowed becomes ``_``:
``nDCG@10`` → ``nDCG_at_10``, ``RR(rel=2)@10`` → ``RR_rel_2_at_10``.
"""

from __future__ import annotations

import re

_PARAMS = re.compile(r"\(([^)]*)\)")
_BAD = re.compile(r"[^A-Za-z0-9_\-./: ]")


def mlflow_safe_name(name: str) -> str:
    def params(match: re.Match) -> str:
        inner = match.group(1).replace("=", "_").replace(",", "_")
        return "_" + inner

    out = _PARAMS.sub(params, name).replace("@", "_at_")
    out = _BAD.sub("_", out)
    return re.sub(r"__+", "_", out).strip("_")
