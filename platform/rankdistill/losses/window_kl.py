"""Listwise KD over one teacher window: FIRST's soft labels."""

from __future__ import annotations

from torch import Tensor

from rankdistill.losses.kl import KLDistillation


class WindowKLDistillation(KLDistillation):
    """KL distillation of a listwise teacher's window (FIRST's first-token logits)::

        L = T² · KL( softmax(t / T) || softmax(s / T) )   over the passages of one window

    where ``t`` are the teacher's next-token log-probabilities of the window's identifiers
    (``[A]``, ``[B]``, ...; listwise mode ``first``, stored as ``identifier_logprobs``) and ``s``
    the student's scores of the same passages. The window is the list: a row is one window, so a
    query with several windows gives several rows. ``t`` may be log-probabilities over the whole
    vocabulary or over the identifiers only: the softmax over the window removes the difference
    (a per-window constant).

    Inputs:
        scores: ``[B, W]`` student scores of each window's passages (B windows, W passages).
        targets: ``[B, W]`` teacher log-probabilities (or logits) of the same passages.
        mask: ``bool [B, W]``; padding of windows shorter than W.

    Args:
        temperature: T, applied to teacher and student alike (default 1).
        scale_by_t2: multiply by T² (Hinton et al. 2015: keeps gradient magnitudes comparable
            across temperatures); default False.

    References: Reddy et al. 2024, "FIRST: Faster Improved Listwise Reranking with Single Token
    Decoding" (the first identifier's logits as the teacher's listwise judgement); Hinton et al.
    2015, "Distilling the Knowledge in a Neural Network".

    Example::

        >>> import math, torch
        >>> WindowKLDistillation()(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, math.log(3.0)]]))
        tensor(0.1308)   # p = (.25, .75), q = (.5, .5): .25 log(.25/.5) + .75 log(.75/.5)
    """

    name = "window_kl"

    def __init__(self, temperature: float = 1.0, scale_by_t2: bool = False):
        super().__init__(temperature=temperature, student_temperature=temperature)
        self.scale_by_t2 = bool(scale_by_t2)

    def forward(self, scores: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
        loss = super().forward(scores, targets, mask)
        return loss * self.temperature**2 if self.scale_by_t2 else loss
