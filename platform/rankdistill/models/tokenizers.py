"""Tokenizers of the reranker students: a list of queries and their passage lists in, padded
``[B, k, L]`` tensors and the ``bool [B, k]`` passage mask out (see :mod:`rankdistill.models.base`
for the contract)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from rankdistill.errors import ConfigError

# --------------------------------------------------------------------------------------------


def pad_rows(rows: Sequence[Sequence[int]], value: int, length: int | None = None) -> Tensor:
    width = max((len(r) for r in rows), default=0) if length is None else length
    out = torch.full((len(rows), max(width, 1)), value, dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out


def check_lists(queries: Sequence[str], passages: Sequence[Sequence[str]]) -> None:
    if isinstance(queries, str) or isinstance(passages, str):
        raise TypeError("queries must be a list of str and passages a list of lists of str")
    if len(queries) != len(passages):
        raise ValueError(f"{len(queries)} queries but {len(passages)} passage lists")
    for i, plist in enumerate(passages):
        if isinstance(plist, str):
            raise TypeError(f"passages[{i}] is a str; expected a list of passages for query {i}")


class RerankerTokenizer:
    """Base of the collators: wraps a Hugging Face *fast* tokenizer.

    It truncates query and passage separately (``query_length`` / ``passage_length`` tokens,
    special tokens not counted) and lets the tokenizer's own post-processor add the special
    tokens, so any BERT/ELECTRA/RoBERTa-style tokenizer works. ``save_pretrained`` saves the
    wrapped tokenizer; the lengths live in the model config.
    """

    def __init__(self, tokenizer: Any, query_length: int = 32, passage_length: int = 256):
        if not getattr(tokenizer, "is_fast", False) or not hasattr(tokenizer, "backend_tokenizer"):
            raise ConfigError("a fast (Rust-backed) Hugging Face tokenizer is required", key="tokenizer")
        if query_length < 1 or passage_length < 1:
            raise ConfigError("query_length and passage_length must be >= 1", key="query_length")
        self.tokenizer = tokenizer
        self.query_length = int(query_length)
        self.passage_length = int(passage_length)
        self._refresh_backend()

    def _refresh_backend(self) -> None:
        from tokenizers import Tokenizer

        # a private copy: the saved tokenizer.json may carry padding/truncation settings
        backend = Tokenizer.from_str(self.tokenizer.backend_tokenizer.to_str())
        backend.no_padding()
        backend.no_truncation()
        self._backend = backend
        self.pad_token_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.uses_token_type_ids = "token_type_ids" in getattr(self.tokenizer, "model_input_names", ())

    def __len__(self) -> int:
        return len(self.tokenizer)

    def add_special_token(self, token: str) -> int:
        """Add a special token (e.g. ``[INT]``) if absent and return its id."""
        if token not in self.tokenizer.get_vocab():
            self.tokenizer.add_special_tokens({"additional_special_tokens": [token]})
            self._refresh_backend()
        return self.tokenizer.convert_tokens_to_ids(token)

    def encode_texts(self, texts: Sequence[str], max_tokens: int):
        """Encodings without special tokens, each cut to ``max_tokens``."""
        encodings = self._backend.encode_batch(list(texts), add_special_tokens=False)
        for enc in encodings:
            if len(enc.ids) > max_tokens:
                enc.truncate(max_tokens)
        return encodings

    def post_process(self, first, second=None):
        """Add the tokenizer's special tokens around one text or a pair of texts."""
        return self._backend.post_process(first, second, add_special_tokens=True)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        self.tokenizer.save_pretrained(os.fspath(directory))

    def __call__(self, queries: Sequence[str], passages: Sequence[Sequence[str]]) -> dict[str, Tensor]:
        raise NotImplementedError


class CrossEncoderTokenizer(RerankerTokenizer):
    """``[CLS] q [SEP] p [SEP]`` for every (query, passage), the k dimension padded.

    Batch keys (B queries, k = longest passage list, L = longest sequence):

    - ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when the tokenizer uses them):
      ``long [B, k, L]``. Padded passage slots hold the sequence of an empty passage.
    - ``passage_mask``: ``bool [B, k]``.
    - with ``segment_masks=True`` (CELI): ``query_token_mask`` and ``passage_token_mask``,
      ``bool [B, k, L]``, True on the query's / passage's own tokens (special and padding tokens
      excluded).

    With ``interaction_token`` (Set-Encoder) that token is inserted right after the first
    special token: ``[CLS] [INT] q [SEP] p [SEP]``, with the first token's type id (unless the
    tokenizer's post-processor already put it there, as lightning-ir's Set-Encoder tokenizer does).
    """

    def __init__(
        self,
        tokenizer: Any,
        query_length: int = 32,
        passage_length: int = 256,
        interaction_token: str | None = None,
        segment_masks: bool = False,
    ):
        super().__init__(tokenizer, query_length, passage_length)
        self.interaction_token = interaction_token
        self.interaction_token_id = self.add_special_token(interaction_token) if interaction_token else None
        self.segment_masks = segment_masks

    def __call__(self, queries: Sequence[str], passages: Sequence[Sequence[str]]) -> dict[str, Tensor]:
        check_lists(queries, passages)
        batch_size = len(queries)
        k = max((len(p) for p in passages), default=0)
        if batch_size == 0 or k == 0:
            raise ValueError("need at least one query with at least one passage")
        q_enc = self.encode_texts(queries, self.query_length)
        flat = [p for plist in passages for p in plist] + [""]
        p_enc = self.encode_texts(flat, self.passage_length)
        empty = p_enc[-1]
        ids, types, seg_q, seg_p = [], [], [], []
        passage_mask = torch.zeros(batch_size, k, dtype=torch.bool)
        pos = 0
        for b, plist in enumerate(passages):
            for j in range(k):
                if j < len(plist):
                    enc = self.post_process(q_enc[b], p_enc[pos])
                    pos += 1
                    passage_mask[b, j] = True
                else:
                    enc = self.post_process(q_enc[b], empty)
                row_ids, row_types = list(enc.ids), list(enc.type_ids)
                # segment of every token: the first n_q non-special tokens are the query's, the rest
                # the passage's (any special-token template keeps that order)
                n_query, seq, seen = len(q_enc[b].ids), [], 0
                for special in enc.special_tokens_mask:
                    seq.append(None if special else (0 if seen < n_query else 1))
                    seen += not special
                # a tokenizer whose post-processor already inserts it (lightning-ir's) keeps its one
                if self.interaction_token_id is not None and row_ids[1:2] != [self.interaction_token_id]:
                    row_ids.insert(1, self.interaction_token_id)
                    row_types.insert(1, row_types[0])
                    seq.insert(1, None)
                ids.append(row_ids)
                types.append(row_types)
                if self.segment_masks:
                    seg_q.append([int(s == 0) for s in seq])
                    seg_p.append([int(s == 1) for s in seq])
        input_ids = pad_rows(ids, self.pad_token_id)
        length = input_ids.shape[1]
        attention_mask = pad_rows([[1] * len(r) for r in ids], 0, length)
        batch = {
            "input_ids": input_ids.view(batch_size, k, length),
            "attention_mask": attention_mask.view(batch_size, k, length),
        }
        if self.uses_token_type_ids:
            batch["token_type_ids"] = pad_rows(types, 0, length).view(batch_size, k, length)
        if self.segment_masks:
            batch["query_token_mask"] = pad_rows(seg_q, 0, length).view(batch_size, k, length).bool()
            batch["passage_token_mask"] = pad_rows(seg_p, 0, length).view(batch_size, k, length).bool()
        batch["passage_mask"] = passage_mask
        return batch


# --------------------------------------------------------------------------------------------
