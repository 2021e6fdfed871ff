"""Student rerankers, one file per architecture; the shared contract is documented in ``base.py``.

=================  ==========================  =================================================
name               class                       paper
=================  ==========================  =================================================
``mono``           :class:`MonoCrossEncoder`   monoBERT (Nogueira & Cho 2019)
``celi``           :class:`CELI`               CELI (Zhang, Li & Lin), ../shared/papers/celi.md
``set-encoder``    :class:`SetEncoder`         Set-Encoder (Schlatt et al., ECIR 2025)
``listconranker``  :class:`ListConRanker`      ListConRanker (Liu et al. 2025)
``duo``            :class:`DuoCrossEncoder`    duoBERT (Pradeep et al. 2021)
``bi-encoder``     :class:`BiEncoder`          DPR (Karpukhin et al. 2020), dense retriever
``colbert``        :class:`ColBERT`            ColBERT (Khattab & Zaharia 2020), dense retriever
=================  ==========================  =================================================
"""

from rankdistill.models.base import Reranker, RerankerOutput
from rankdistill.models.bi_encoder import BiEncoder, BiEncoderConfig
from rankdistill.models.celi import CELI, CELIConfig, CELIOutput, late_interaction
from rankdistill.models.colbert import ColBERT, ColBERTConfig, ColBERTTokenizer
from rankdistill.models.config import RerankerConfig
from rankdistill.models.dense import DenseOutput, DenseRetriever, DenseTokenizer
from rankdistill.models.duo import DuoConfig, DuoCrossEncoder, DuoOutput, DuoTokenizer, aggregate_pairs
from rankdistill.models.listconranker import (
    EmbeddingListTokenizer,
    ListConRanker,
    ListConRankerConfig,
    ListConRankerOutput,
    list_attention_mask,
)
from rankdistill.models.maxsim import maxsim
from rankdistill.models.mono import MonoConfig, MonoCrossEncoder
from rankdistill.models.registry import (
    RERANKERS,
    build_reranker,
    get_reranker_class,
    load_reranker,
    load_student,
)
from rankdistill.models.set_encoder import (
    SetEncoder,
    SetEncoderConfig,
    SetEncoderOutput,
    inter_passage_attention,
)
from rankdistill.models.tokenizers import CrossEncoderTokenizer, RerankerTokenizer

__all__ = [
    "CELI",
    "RERANKERS",
    "BiEncoder",
    "BiEncoderConfig",
    "CELIConfig",
    "CELIOutput",
    "ColBERT",
    "ColBERTConfig",
    "ColBERTTokenizer",
    "CrossEncoderTokenizer",
    "DenseOutput",
    "DenseRetriever",
    "DenseTokenizer",
    "DuoConfig",
    "DuoCrossEncoder",
    "DuoOutput",
    "DuoTokenizer",
    "EmbeddingListTokenizer",
    "ListConRanker",
    "ListConRankerConfig",
    "ListConRankerOutput",
    "MonoConfig",
    "MonoCrossEncoder",
    "Reranker",
    "RerankerConfig",
    "RerankerOutput",
    "RerankerTokenizer",
    "SetEncoder",
    "SetEncoderConfig",
    "SetEncoderOutput",
    "aggregate_pairs",
    "build_reranker",
    "get_reranker_class",
    "inter_passage_attention",
    "late_interaction",
    "list_attention_mask",
    "load_reranker",
    "load_student",
    "maxsim",
]
