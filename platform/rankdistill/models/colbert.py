"""ColBERT: contextualised late interaction (Khattab & Zaharia, SIGIR 2020, §3), the
architecture PairDistill trains (../shared/papers/pairdistill.md §5.2).

- Query: ``[CLS] [Q] q [SEP]`` then ``[MASK]`` tokens up to a fixed length ``N_q`` (query
  augmentation, §3.2); every position, masks included, is a query token of MaxSim.
  ``N_q = query_length + 3`` (the text is cut to ``query_length`` tokens; ``[CLS]``, ``[Q]`` and
  ``[SEP]`` come on top). ``attend_to_mask_tokens`` lets the encoder attend to the masks (the
  paper's augmentation; default True).
- Document: ``[CLS] [D] d [SEP]`` (text cut to ``passage_length`` tokens); tokens that are
  punctuation (``string.punctuation``) are skipped in MaxSim (§3.2 "filter out ... punctuation").
- Both: encoder -> linear projection to ``dim`` (128, no bias) -> L2 normalisation (§3.2).
- ``s(q, d) = sum_i max_j E_q_i . E_d_j`` (Eq. 3), :func:`~rankdistill.models.maxsim.maxsim`,
  the same code CELI uses.

``[Q]`` / ``[D]`` are the tokens named by ``query_marker`` / ``document_marker`` (default
``[unused0]`` / ``[unused1]`` as the original implementation); a marker that is not in the
vocabulary is added and the embeddings resized.

Indexing and retrieval: :class:`rankdistill.retrieval.colbert_index.ColbertIndex` (token-level
faiss + exact MaxSim re-scoring; no PLAID).
"""

from __future__ import annotations

import os
import string
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rankdistill.errors import ConfigError, DataFormatError
from rankdistill.models.backbone import encoder_from_config, load_encoder
from rankdistill.models.config import RerankerConfig
from rankdistill.models.dense import DenseOutput, DenseRetriever, DenseTokenizer
from rankdistill.models.maxsim import maxsim
from rankdistill.models.tokenizers import pad_rows


class ColBERTConfig(RerankerConfig):
    """Options of :class:`ColBERT` (paper values in brackets).

    Args:
        dim: output size of the linear projection [128].
        query_marker / document_marker: the ``[Q]`` / ``[D]`` tokens.
        attend_to_mask_tokens: the encoder attends to the ``[MASK]`` query padding [yes].
        skip_punctuation: drop punctuation tokens of documents from MaxSim [yes].
        new_projection: read by :meth:`ColBERT.from_backbone` only: start from a random projection.
            Without it, a backbone folder must hold a trained one (colbert-ai ``linear.weight`` or
            pylate ``1_Dense``), and a folder without one (a plain encoder) is refused.
    """

    model_type = "rankdistill-colbert"

    dim: int = 128
    query_marker: str = "[unused0]"
    document_marker: str = "[unused1]"
    attend_to_mask_tokens: bool = True
    skip_punctuation: bool = True
    new_projection: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        if not isinstance(self.dim, int) or self.dim < 1:
            raise ConfigError(f"must be a positive integer, got {self.dim!r}", key="dim")


class ColBERTTokenizer(DenseTokenizer):
    """Batch keys: ``query_input_ids``, ``query_attention_mask`` ``long [B, N_q]`` (fixed length);
    ``passage_input_ids``, ``passage_attention_mask`` ``long [B, k, Lp]``;
    ``passage_token_mask`` ``bool [B, k, Lp]`` (tokens MaxSim may match: real, not punctuation);
    ``passage_mask`` ``bool [B, k]``."""

    def __init__(self, tokenizer: Any, query_length: int = 32, passage_length: int = 256,
                 query_marker: str = "[unused0]", document_marker: str = "[unused1]",
                 attend_to_mask_tokens: bool = True, skip_punctuation: bool = True):
        super().__init__(tokenizer, query_length, passage_length)
        if tokenizer.mask_token_id is None:
            raise ConfigError("ColBERT needs a tokenizer with a [MASK] token", key="tokenizer")
        self.query_marker_id = self.add_special_token(query_marker)
        self.document_marker_id = self.add_special_token(document_marker)
        self.mask_token_id = int(tokenizer.mask_token_id)
        self.attend_to_mask_tokens = attend_to_mask_tokens
        self.skip_ids: set[int] = set()
        if skip_punctuation:
            for symbol in string.punctuation:
                ids = self._backend.encode(symbol, add_special_tokens=False).ids
                if ids:
                    self.skip_ids.add(int(ids[0]))

    @property
    def query_tokens(self) -> int:
        """``N_q``: every query is exactly this long."""
        return self.query_length + 3

    def _with_marker(self, texts: Sequence[str], max_tokens: int, marker: int) -> list[list[int]]:
        rows = []
        for enc in self.encode_texts(texts, max_tokens):
            ids = list(self.post_process(enc).ids)
            rows.append(ids[:1] + [marker] + ids[1:])
        return rows

    def queries(self, texts: Sequence[str]) -> dict[str, Tensor]:
        rows = self._with_marker(texts, self.query_length, self.query_marker_id)
        ids = pad_rows(rows, self.mask_token_id, self.query_tokens)
        attention = torch.ones_like(ids) if self.attend_to_mask_tokens else pad_rows(
            [[1] * len(r) for r in rows], 0, self.query_tokens)
        return {"input_ids": ids, "attention_mask": attention}

    def passages(self, texts: Sequence[str]) -> dict[str, Tensor]:
        rows = self._with_marker(texts, self.passage_length, self.document_marker_id)
        ids = pad_rows(rows, self.pad_token_id)
        attention = pad_rows([[1] * len(r) for r in rows], 0, ids.shape[1])
        keep = [[int(t not in self.skip_ids) for t in r] for r in rows]
        token_mask = pad_rows(keep, 0, ids.shape[1]).bool() & attention.bool()
        return {"input_ids": ids, "attention_mask": attention, "token_mask": token_mask}


class ColBERT(DenseRetriever):
    """ColBERT student. Batch: :class:`ColBERTTokenizer`.

    ``forward(...) -> DenseOutput`` (``scores [B, k]`` MaxSim, ``in_batch_scores [B, B*k]``).
    ``encode_queries(texts) -> float [N, N_q, dim]`` (all positions count);
    ``encode_passages(texts) -> list`` of ``float [n_i, dim]`` (only the tokens MaxSim matches).
    """

    config_class = ColBERTConfig
    registry_name = "colbert"

    def __init__(self, config: ColBERTConfig, backbone: nn.Module | None = None):
        super().__init__(config)
        self.encoder = backbone if backbone is not None else encoder_from_config(config.backbone_config)
        self.linear = nn.Linear(self.encoder.config.hidden_size, config.dim, bias=False)
        self.post_init()

    @classmethod
    def _load_backbone(cls, path: str | os.PathLike) -> nn.Module:
        return load_encoder(path)

    @classmethod
    def from_backbone(cls, path: str | os.PathLike, **config: Any) -> ColBERT:
        """A ColBERT on the checkpoint in folder ``path``, **keeping its trained projection**:
        colbert-ai's ``linear.weight`` or pylate's ``1_Dense`` (:mod:`~rankdistill.models.
        colbert_checkpoint`). The checkpoint's own settings (dim, lengths, markers, attention to the
        query's [MASK] tokens, punctuation skipping) are the defaults; ``config`` overrides them,
        except ``dim``, which must equal the projection's. A folder without a projection is refused
        unless ``new_projection=True`` (then the projection is random, as a plain encoder needs)."""
        from rankdistill.models.colbert_checkpoint import read_projection

        found = None if config.get("new_projection") else read_projection(path)
        if found is None and not config.get("new_projection"):
            raise ConfigError(
                f"'{os.fspath(path)}' holds no ColBERT projection (neither colbert-ai's 'linear.weight' nor "
                "a pylate 1_Dense folder); set student.options.new_projection: true to start from a random "
                "projection on this encoder", key="new_projection")
        if found is not None:
            if "dim" in config and int(config["dim"]) != found.options["dim"]:
                raise ConfigError(f"dim {config['dim']} but the {found.source} projection in '{found.file}' "
                                  f"has {found.options['dim']} outputs", key="dim")
            config = {**found.options, **config}
        model = super().from_backbone(path, **config)
        if found is not None:
            if tuple(found.weight.shape) != tuple(model.linear.weight.shape):
                raise DataFormatError(f"projection of shape {tuple(found.weight.shape)} for an encoder of hidden "
                                      f"size {model.linear.weight.shape[1]}", found.file)
            with torch.no_grad():
                model.linear.weight.copy_(found.weight)
        return model

    def _make_tokenizer(self, hf_tokenizer: Any) -> ColBERTTokenizer:
        c = self.config
        tokenizer = ColBERTTokenizer(
            hf_tokenizer, query_marker=c.query_marker, document_marker=c.document_marker,
            attend_to_mask_tokens=c.attend_to_mask_tokens, skip_punctuation=c.skip_punctuation,
            **c.tokenizer_kwargs(),
        )
        if len(tokenizer) > self.encoder.get_input_embeddings().num_embeddings:  # a marker was added
            self.encoder.resize_token_embeddings(len(tokenizer))
            self.config.backbone_config = {**(self.config.backbone_config or {}), "vocab_size": len(tokenizer)}
        return tokenizer

    def max_sequence_tokens(self) -> int:
        return max(self.config.query_length, self.config.passage_length) + 3

    def token_vectors(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Encoder -> projection -> L2 norm: ``[N, L] -> float [N, L, dim]``."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return F.normalize(self.linear(hidden), p=2, dim=-1)

    def forward(
        self,
        query_input_ids: Tensor,
        query_attention_mask: Tensor,
        passage_input_ids: Tensor,
        passage_attention_mask: Tensor,
        passage_token_mask: Tensor,
        passage_mask: Tensor,
        **unused: Any,
    ) -> DenseOutput:
        batch, k, length = passage_input_ids.shape
        q = self.token_vectors(query_input_ids, query_attention_mask)  # [B, Nq, dim]
        q_mask = torch.ones(q.shape[:2], dtype=torch.bool, device=q.device)
        flat = passage_mask.reshape(-1)
        d_real = self.token_vectors(
            passage_input_ids.reshape(-1, length)[flat], passage_attention_mask.reshape(-1, length)[flat]
        )
        d = d_real.new_zeros(batch * k, length, d_real.shape[-1]).index_copy(0, flat.nonzero().flatten(), d_real)
        d_mask = passage_token_mask.reshape(-1, length) & flat[:, None]
        all_scores = maxsim(q, q_mask, d, d_mask, paired=False)  # [B, B*k]
        own, in_batch, in_mask = self._scatter_in_batch(all_scores, passage_mask)
        return DenseOutput(scores=own, mask=passage_mask, in_batch_scores=in_batch, in_batch_mask=in_mask)

    # ---- inference ------------------------------------------------------------------------------

    def encode_queries(self, texts: Sequence[str], batch_size: int | None = None) -> Tensor:
        """``float [N, N_q, dim]`` query token vectors (eval mode, no grad, CPU)."""
        tokenizer = self._require_tokenizer()
        out = []
        with self.inference():
            for chunk in self._chunks(texts, batch_size):
                enc = self._batch_to_device(tokenizer.queries(chunk))
                out.append(self.token_vectors(enc["input_ids"], enc["attention_mask"]).float().cpu())
        return torch.cat(out) if out else torch.empty(0, tokenizer.query_tokens, self.config.dim)

    def encode_passages(self, texts: Sequence[str], batch_size: int | None = None) -> list[Tensor]:
        """Per passage ``float [n_i, dim]``: the vectors of the tokens MaxSim matches (punctuation
        and padding dropped), eval mode, no grad, CPU."""
        tokenizer = self._require_tokenizer()
        out: list[Tensor] = []
        with self.inference():
            for chunk in self._chunks(texts, batch_size):
                enc = tokenizer.passages(chunk)
                vectors = self.token_vectors(enc["input_ids"].to(self.device),
                                             enc["attention_mask"].to(self.device)).float().cpu()
                out.extend(v[m] for v, m in zip(vectors, enc["token_mask"], strict=True))
        return out

    @property
    def embedding_dim(self) -> int:
        return int(self.config.dim)
