"""Dense students: BiEncoder equals sentence-transformers on all-MiniLM-L6-v2, in-batch scores
are the dot products of the encoders' outputs, ColBERT's tokenisation and MaxSim by hand."""

from __future__ import annotations

import string

import pytest
import torch
from model_fixtures import PASSAGES, QUERY, minilm_path, tiny_reranker
from rankdistill.errors import ConfigError
from rankdistill.models import BiEncoder, ColBERT, maxsim

TEXTS = [QUERY, *PASSAGES, "Hello, world! A sentence with punctuation; and (brackets).", "x"]


def test_minilm_bi_encoder_matches_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    path = str(minilm_path())
    model = BiEncoder.from_backbone(path)
    assert model.config.pooling == "mean" and model.config.similarity == "cosine"
    reference = SentenceTransformer(path, device="cpu").encode(TEXTS, convert_to_tensor=True).cpu()
    for ours in (model.encode_queries(TEXTS, batch_size=3), model.encode_passages(TEXTS, batch_size=4)):
        assert ours.shape == reference.shape == (len(TEXTS), 384)
        torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    # the training-time score is the cosine of those embeddings
    scores = model.score(QUERY, PASSAGES)
    expected = (reference[1 : 1 + len(PASSAGES)] @ reference[0]).tolist()
    assert scores == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("options", [
    {"pooling": "cls", "similarity": "dot", "shared_encoder": True},
    {"pooling": "mean", "similarity": "cosine", "shared_encoder": False, "scale": 20.0},
])
def test_bi_encoder_scores_are_products_of_the_encodings(options):
    model = tiny_reranker("bi-encoder", **options)
    queries = [QUERY, "dogs"]
    passages = [PASSAGES[:3], PASSAGES[3:4]]
    with torch.no_grad():
        out = model(**model.tokenizer(queries, passages))
    q = model.encode_queries(queries)
    p = model.encode_passages([t for row in passages for t in row])
    assert q.shape == (2, 32)
    if options["similarity"] == "cosine":
        torch.testing.assert_close(q.norm(dim=-1), torch.ones(2))
    scale = options.get("scale", 1.0)
    # slots: query 0 has passages 0..2, query 1 has passage 3 and two padded slots
    slot_of = {0: 0, 1: 1, 2: 2, 3: 3}
    for b in range(2):
        for idx, slot in slot_of.items():
            expected = scale * float(q[b] @ p[idx])
            assert float(out.in_batch_scores[b, slot]) == pytest.approx(expected, abs=1e-4)
        assert torch.isneginf(out.in_batch_scores[b, 4:]).all()
    assert out.in_batch_mask[0].tolist() == [True, True, True, True, False, False]
    assert float(out.scores[1, 0]) == pytest.approx(scale * float(q[1] @ p[3]), abs=1e-4)
    assert torch.isneginf(out.scores[1, 1:]).all()
    if not options["shared_encoder"]:
        assert model.query_encoder is not model.passage_encoder
    if options["pooling"] == "cls":  # CLS pooling is the encoder's first hidden state
        enc = model.tokenizer.queries([QUERY])
        with torch.no_grad():
            hidden = model.encoder(**enc).last_hidden_state[:, 0]
        torch.testing.assert_close(model.encode_queries([QUERY]), hidden)


def test_bi_encoder_rejects_bad_options():
    with pytest.raises(ConfigError, match="pooling"):
        tiny_reranker("bi-encoder", pooling="max")
    with pytest.raises(ConfigError, match="similarity"):
        tiny_reranker("bi-encoder", similarity="l2")


def test_maxsim_hand_computed_paired_and_all_pairs():
    q = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]]])  # third token masked out
    q_mask = torch.tensor([[True, True, False]])
    d = torch.tensor([[[3.0, 1.0], [-1.0, 4.0], [9.0, 9.0]], [[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]])
    d_mask = torch.tensor([[True, True, False], [True, False, False]])
    # doc 0: max(3, -1) + max(2, 8) = 11 (the masked [9, 9] ignored); doc 1: 1 + 2 = 3
    assert maxsim(q, q_mask, d, d_mask, paired=False).tolist() == [[11.0, 3.0]]
    assert maxsim(q.expand(2, -1, -1), q_mask.expand(2, -1), d, d_mask).tolist() == [11.0, 3.0]
    # a document without tokens contributes 0
    assert maxsim(q, q_mask, d[:1], torch.zeros(1, 3, dtype=torch.bool)).tolist() == [0.0]


def test_colbert_tokenizer_markers_mask_padding_and_punctuation():
    model = tiny_reranker("colbert", query_length=8)
    tok = model.tokenizer
    hf = tok.tokenizer
    batch = tok(["what is a cat", "a much longer query that will be cut at eight tokens"],
                [["hello, world!"], ["cats; dogs."]])
    ids = batch["query_input_ids"]
    assert ids.shape == (2, 11)  # N_q = 8 + [CLS] [Q] [SEP]
    q0 = hf.convert_ids_to_tokens(ids[0].tolist())
    assert q0[:7] == ["[CLS]", "[unused0]", "what", "is", "a", "cat", "[SEP]"]
    assert q0[7:] == ["[MASK]"] * 4
    assert batch["query_attention_mask"].all()  # the encoder attends to the [MASK] augmentation
    assert hf.convert_ids_to_tokens(ids[1].tolist())[-1] == "[SEP]"  # cut to 8 text tokens
    p_ids = batch["passage_input_ids"][0, 0].tolist()
    toks = hf.convert_ids_to_tokens(p_ids)
    assert toks[:2] == ["[CLS]", "[unused1]"]
    keep = batch["passage_token_mask"][0, 0].tolist()
    kept = [t for t, k in zip(toks, keep) if k]
    assert kept == ["[CLS]", "[unused1]", "hello", "world", "[SEP]"]
    assert not any(t in string.punctuation for t in kept)
    no_mask_attention = tiny_reranker("colbert", query_length=8, attend_to_mask_tokens=False)
    attention = no_mask_attention.tokenizer(["what is a cat"], [["x"]])["query_attention_mask"][0].tolist()
    assert attention == [1] * 7 + [0] * 4


def test_colbert_scores_are_maxsim_of_the_encodings_written_as_loops():
    model = tiny_reranker("colbert", dim=16)
    queries = [QUERY, "dogs"]
    passages = [PASSAGES[:3], ["Dogs, bark!"]]
    with torch.no_grad():
        out = model(**model.tokenizer(queries, passages))
    q = model.encode_queries(queries)  # [2, N_q, 16]
    docs = model.encode_passages([t for row in passages for t in row])
    assert q.shape == (2, 35, 16)
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(2, 35))
    assert docs[3].shape[0] == len(["[CLS]", "[D]", "dogs", "bark", "[SEP]"])

    def by_hand(qv, dv):  # Eq. 3: sum over query tokens of the best document token
        total = 0.0
        for i in range(qv.shape[0]):
            total += max(float(qv[i] @ dv[j]) for j in range(dv.shape[0]))
        return total

    for b in range(2):
        for slot, doc in enumerate(docs):
            assert float(out.in_batch_scores[b, slot]) == pytest.approx(by_hand(q[b], doc), abs=1e-3)
    assert float(out.scores[1, 0]) == pytest.approx(by_hand(q[1], docs[3]), abs=1e-3)
    assert model.score(QUERY, PASSAGES[:3]) == pytest.approx([by_hand(q[0], d) for d in docs[:3]], abs=1e-3)


def test_colbert_adds_missing_markers_and_round_trips(tmp_path):
    model = tiny_reranker("colbert", dim=8, query_marker="[Q]", document_marker="[D]")
    vocab = model.tokenizer.tokenizer.get_vocab()
    assert "[Q]" in vocab and "[D]" in vocab
    assert model.encoder.get_input_embeddings().num_embeddings == len(model.tokenizer)
    before = model.score(QUERY, PASSAGES)
    model.save_pretrained(tmp_path)
    loaded = ColBERT.from_pretrained(tmp_path)
    assert loaded.score(QUERY, PASSAGES) == pytest.approx(before, abs=1e-5)
