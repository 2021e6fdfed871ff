"""Rerank candidate lists with a trained student on a Ray Data actor pool (one model per actor)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from rankdistill.config import check_range
from rankdistill.data.records import CandidateList, Run


@dataclass
class RerankConfig:
    depth: int = 100  # rerank the top `depth` candidates of the first stage
    num_actors: int = 2
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    batch_size: int = 32  # passages per forward pass (pointwise models)
    queries_per_batch: int = 4

    def __post_init__(self) -> None:
        for name in ("depth", "num_actors", "batch_size", "queries_per_batch"):
            check_range(name, getattr(self, name), minimum=1)
        check_range("cpus_per_actor", self.cpus_per_actor, above=0)
        check_range("gpus_per_actor", self.gpus_per_actor, minimum=0)


class _RerankActor:
    def __init__(self, model, batch_size: int, threads: int):
        import torch

        from rankdistill.models import load_reranker
        from rankdistill.storage import local_folder

        torch.set_num_threads(max(1, threads))
        with local_folder(model) as folder:  # a ShippedFolder (object store) or a URI
            self.model = load_reranker(folder)
        if torch.cuda.is_available():  # pragma: no cover - GPU clusters
            self.model.to("cuda")
        self.model.eval()
        self.batch_size = batch_size

    def __call__(self, batch: dict) -> dict:
        scores = []
        for query, texts in zip(batch["query"], batch["texts"], strict=True):
            scores.append(self.model.score(str(query), [str(t) for t in texts], batch_size=self.batch_size))
        return {"qid": list(batch["qid"]), "docids": [list(d) for d in batch["docids"]], "rerank_scores": scores}


def rerank_on_ray(model_dir: str | Path, lists: Iterable[CandidateList], config: RerankConfig) -> Run:
    """Scores every candidate (top ``config.depth``) with the student (a folder on the driver, sent
    to the actors through the object store, or a storage URI); returns the reranked run."""
    import ray.data

    from rankdistill.storage import ship_folder

    rows = [cl.top(config.depth).to_dict() for cl in lists]
    if not rows:
        return Run()
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 4 * config.num_actors)))
    ds = ds.map_batches(
        _RerankActor,
        fn_constructor_kwargs={"model": ship_folder(model_dir), "batch_size": config.batch_size,
                               "threads": int(config.cpus_per_actor)},
        batch_size=config.queries_per_batch,
        compute=ray.data.ActorPoolStrategy(size=max(1, config.num_actors)),
        num_cpus=config.cpus_per_actor,
        num_gpus=config.gpus_per_actor or None,
    )
    run = Run()
    for row in ds.iter_rows():
        run[str(row["qid"])] = {str(d): float(s) for d, s in zip(row["docids"], row["rerank_scores"], strict=True)}
    return run
