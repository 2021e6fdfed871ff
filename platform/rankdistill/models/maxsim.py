"""MaxSim, the late-interaction operator shared by ColBERT and CELI.

``MaxSim(q, d) = sum_{i in query tokens} max_{j in document tokens} q_i . d_j``
(Khattab & Zaharia, SIGIR 2020, Eq. 3; CELI Eq. 4 applies it inside one joint sequence).

One implementation, two layouts:

- ``paired=True``: query row ``n`` against document row ``n`` -> ``[N]`` (CELI, and ColBERT's
  per-query candidate lists after flattening);
- ``paired=False``: every query row against every document row -> ``[Nq, Nd]`` (ColBERT's in-batch
  negatives, exact re-scoring of retrieved candidates).

Masked query tokens contribute nothing; a document with no unmasked token contributes 0 per
query token (so the score stays finite). Half-precision inputs give fp32 scores (the per-token
maxima are summed in fp32).
"""

from __future__ import annotations

import torch
from torch import Tensor


def maxsim(
    query_vectors: Tensor,
    query_mask: Tensor,
    doc_vectors: Tensor,
    doc_mask: Tensor,
    paired: bool = True,
) -> Tensor:
    """Late-interaction scores.

    Args:
        query_vectors: ``float [Nq, Lq, D]`` query token vectors.
        query_mask: ``bool [Nq, Lq]``, True for query tokens that count.
        doc_vectors: ``float [Nd, Ld, D]`` document token vectors.
        doc_mask: ``bool [Nd, Ld]``, True for document tokens that may be matched.
        paired: ``Nq == Nd`` and row n is scored against row n (``[N]``); otherwise all
            combinations (``[Nq, Nd]``).

    Example::

        >>> q = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]]); d = torch.tensor([[[3.0, 1.0], [-1.0, 4.0]]])
        >>> ones = torch.ones(1, 2, dtype=torch.bool)
        >>> maxsim(q, ones, d, ones)      # max(3, -1) + max(2, 8)
        tensor([11.])
    """
    query_mask = query_mask.bool()
    doc_mask = doc_mask.bool()
    if paired:
        if query_vectors.shape[0] != doc_vectors.shape[0]:
            raise ValueError(f"paired maxsim needs as many query rows ({query_vectors.shape[0]}) "
                             f"as document rows ({doc_vectors.shape[0]})")
        sim = torch.matmul(query_vectors, doc_vectors.transpose(1, 2))  # [N, Lq, Ld]
        sim = sim.masked_fill(~doc_mask[:, None, :], float("-inf"))
        best = sim.max(dim=-1).values  # [N, Lq]
        keep = query_mask & torch.isfinite(best)
    else:
        sim = torch.einsum("qid,njd->qnij", query_vectors, doc_vectors)  # [Nq, Nd, Lq, Ld]
        sim = sim.masked_fill(~doc_mask[None, :, None, :], float("-inf"))
        best = sim.max(dim=-1).values  # [Nq, Nd, Lq]
        keep = query_mask[:, None, :] & torch.isfinite(best)
    # the per-token maxima summed in fp32: in bf16 a sum near 25 moves in steps of 0.125
    best = best.float() if best.dtype in (torch.bfloat16, torch.float16) else best
    return torch.where(keep, best, best.new_zeros(())).sum(dim=-1)
