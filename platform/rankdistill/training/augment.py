"""Training-data augmentation for the Set-Encoder's interaction objectives (Set-Encoder §3.4–3.5):
a duplicated passage for the duplicate head (DA-InfoNCE) and near-duplicate clusters for
NA-RankNet. Both act on example rows before training; the models and losses only consume them."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence


def add_duplicate(
    passages: Sequence[str], rng: random.Random | None = None, index: int | None = None
) -> tuple[list[str], list[int], int]:
    """Set-Encoder §3.4 data step: copy one randomly sampled passage ``d_x`` and append it as ``d_{k+1}``.

    Returns ``(passages + [d_x], duplicate_targets, x)`` where ``duplicate_targets[i] = 1`` for both
    copies (the model is permutation invariant, so original and copy are indistinguishable).
    Relevance targets of the new list: append the original's label, e.g. ``labels + [labels[x]]``.
    """
    if not passages:
        raise ValueError("need at least one passage to duplicate")
    rng = rng or random.Random()
    x = rng.randrange(len(passages)) if index is None else index
    out = list(passages) + [passages[x]]
    targets = [1 if p == passages[x] else 0 for p in out]
    return out, targets, x


_WORD = re.compile(r"\w+|[^\w\s]")


def _words(text: str, lowercase: bool, max_words: int) -> set[str]:
    tokens = _WORD.findall(text.lower() if lowercase else text)
    return set(tokens[:max_words])


def jaccard_distances(passages: Sequence[str], lowercase: bool = False, max_words: int = 512) -> list[list[float]]:
    """Pairwise word-set Jaccard distances ``1 - |A ∩ B| / |A ∪ B|`` (two empty texts: 0)."""
    sets = [_words(p, lowercase, max_words) for p in passages]
    n = len(sets)
    out = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            union = len(sets[i] | sets[j])
            d = 1.0 - (len(sets[i] & sets[j]) / union if union else 1.0)
            out[i][j] = out[j][i] = d
    return out


def novelty_clusters(
    passages: Sequence[str], threshold: float = 0.5, lowercase: bool = False, max_words: int = 512
) -> list[int]:
    """Near-duplicate clusters of one ranking (Set-Encoder §3.5): agglomerative clustering with
    *complete* linkage on word Jaccard distance, merging while the linkage distance is below
    ``1 - threshold`` (i.e. every pair in a cluster has Jaccard similarity > ``threshold``).

    Mirrors the authors' script (scikit-learn ``AgglomerativeClustering(metric="precomputed",
    linkage="complete", distance_threshold=0.5)`` on ``nltk`` word tokens, first 512 words); words
    here are ``\\w+`` runs and punctuation marks. Cluster ids are numbered by first appearance.
    """
    n = len(passages)
    if n == 0:
        return []
    dist = jaccard_distances(passages, lowercase, max_words)
    limit = 1.0 - threshold
    clusters: list[list[int]] = [[i] for i in range(n)]

    def linkage(a: list[int], b: list[int]) -> float:
        return max(dist[i][j] for i in a for j in b)

    while len(clusters) > 1:
        best, pair = None, None
        for x in range(len(clusters)):
            for y in range(x + 1, len(clusters)):
                d = linkage(clusters[x], clusters[y])
                if best is None or d < best:
                    best, pair = d, (x, y)
        if best is None or best >= limit:
            break
        x, y = pair
        clusters[x] = clusters[x] + clusters[y]
        del clusters[y]
    label = [0] * n
    for cid, members in enumerate(sorted(clusters, key=min)):
        for i in members:
            label[i] = cid
    return label
