"""Students as MLflow models: a ``pyfunc`` flavor, so ``mlflow.pyfunc.load_model("models:/NAME/1")``
loads a registered student anywhere rankdistill is installed and scores or encodes with it.

Input of ``predict`` (a pandas DataFrame):

- a reranker: columns ``query`` and ``passage``, one row per (query, passage) pair; rows of the
  same query are scored together (listwise students see the query's whole list, in row order).
  Output: one float per row, the student's raw score (higher is more relevant).
- a dense student (``encode_queries`` / ``encode_passages``): column ``text`` and an optional
  column ``kind`` (``query`` or ``passage``, default ``passage``). Output: one embedding (list of
  floats) per row; given ``query`` and ``passage`` columns instead, it scores them like a reranker.

The student folder (``save_pretrained`` layout) is stored as the model's ``student`` artifact;
:func:`student_folder` finds it in a downloaded model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc

ARTIFACT = "student"


class StudentModel(mlflow.pyfunc.PythonModel):
    """The pyfunc wrapper around a rankdistill student folder."""

    def load_context(self, context) -> None:
        from rankdistill.models import load_student

        self.model = load_student(context.artifacts[ARTIFACT])
        self.model.eval()

    def predict(self, context, model_input, params: dict[str, Any] | None = None):
        import pandas as pd

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        batch_size = int((params or {}).get("batch_size", 32))
        if "text" in frame.columns and hasattr(self.model, "encode_queries"):
            return _encode(self.model, frame, batch_size)
        return _score_pairs(self.model, frame, batch_size)


def _score_pairs(model, frame, batch_size: int) -> list[float]:
    missing = {"query", "passage"} - set(frame.columns)
    if missing:
        raise ValueError(f"a reranker's input needs columns 'query' and 'passage' (missing: {sorted(missing)})")
    order: dict[str, list[int]] = {}
    for i, query in enumerate(frame["query"].astype(str)):
        order.setdefault(query, []).append(i)
    scores = [0.0] * len(frame)
    passages = frame["passage"].astype(str).tolist()
    for query, rows in order.items():
        for i, s in zip(rows, model.score(query, [passages[i] for i in rows], batch_size=batch_size), strict=True):
            scores[i] = float(s)
    return scores


def _encode(model, frame, batch_size: int) -> list[list[float]]:
    if "text" not in frame.columns:
        raise ValueError("a dense student's input needs a 'text' column (and optionally 'kind': query | passage)")
    kinds = frame["kind"].astype(str).tolist() if "kind" in frame.columns else ["passage"] * len(frame)
    bad = sorted(set(kinds) - {"query", "passage"})
    if bad:
        raise ValueError(f"column 'kind' must be 'query' or 'passage', got {bad}")
    texts = frame["text"].astype(str).tolist()
    out: list[list[float]] = [[] for _ in texts]
    for kind, encode in (("query", model.encode_queries), ("passage", model.encode_passages)):
        rows = [i for i, k in enumerate(kinds) if k == kind]
        if rows:
            vectors = encode([texts[i] for i in rows], batch_size=batch_size)
            for i, v in zip(rows, vectors, strict=True):
                out[i] = [float(x) for x in v]
    return out


def log_student(model_dir: str | Path, name: str = "model", registered_model_name: str | None = None,
                tags: dict[str, str] | None = None):
    """Log ``model_dir`` as a pyfunc model of the active run (and register it under
    ``registered_model_name``); returns MLflow's ``ModelInfo``."""
    from importlib.metadata import version

    requirements = [f"rankdistill=={version('rankdistill')}", f"torch=={version('torch').split('+')[0]}",
                    f"transformers=={version('transformers')}"]
    return mlflow.pyfunc.log_model(
        name=name, python_model=StudentModel(), artifacts={ARTIFACT: str(model_dir)},
        pip_requirements=requirements, registered_model_name=registered_model_name, tags=tags,
    )


def student_folder(downloaded_model: str | Path) -> Path:
    """The student's ``save_pretrained`` folder inside a downloaded pyfunc model folder (MLflow
    copies the ``student`` artifact to ``artifacts/<folder name>``; its ``MLmodel`` says where)."""
    import yaml

    root = Path(downloaded_model)
    mlmodel = root / "MLmodel"
    if mlmodel.is_file():
        flavor = (yaml.safe_load(mlmodel.read_text(encoding="utf-8")) or {}).get("flavors", {}).get("python_function", {})
        relative = ((flavor.get("artifacts") or {}).get(ARTIFACT) or {}).get("path")
        if relative and (root / relative / "config.json").is_file():
            return root / relative
    if (root / "config.json").is_file():
        return root
    raise FileNotFoundError(f"no student folder (config.json) in the MLflow model at {root}")
