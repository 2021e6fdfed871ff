"""Published checkpoints load with ``load_reranker`` and score as their home libraries do.

- lightning-ir 0.0.6 Set-Encoder (``webis/set-encoder-*`` layout): a tiny random checkpoint saved by
  lightning-ir itself and its scores, recorded by ``scripts/make_lightning_ir_fixtures.py`` in a
  side venv (``tests/fixtures/lightning_ir_set_encoder``), including the seeded
  ``sample_missing_docs`` padding to ``depth``.
- sentence-transformers ``CrossEncoder`` folders: a tiny random one built here and scored by
  ``CrossEncoder.predict`` itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from model_fixtures import PASSAGES, QUERY, minilm_path, tiny_config
from rankdistill.errors import ConfigError
from rankdistill.models import MonoCrossEncoder, SetEncoder, load_reranker

FIXTURE = Path(__file__).parent / "fixtures" / "lightning_ir_set_encoder"
RECORDS = json.loads((FIXTURE / "scores.json").read_text())["records"]


def _record_id(record):
    return f"{record['case']}-sample{int(record['sample_missing_docs'])}-seed{record['seed']}"


@pytest.fixture(scope="module")
def lightning_ir_models():
    return {sample: load_reranker(FIXTURE / "model", sample_missing_docs=sample) for sample in (True, False)}


def test_lightning_ir_checkpoint_loads_with_its_own_options():
    model = load_reranker(FIXTURE / "model")
    assert isinstance(model, SetEncoder)
    config = model.config
    assert (config.score_head, config.score_head_bias, config.position_ids) == ("linear", False, "shifted")
    assert (config.depth, config.sample_missing_docs, config.int_attention_bias) == (8, True, None)
    assert (config.query_length, config.passage_length) == (8, 24)
    # no BERT pooler and no biased classifier: the only head is the bias-free linear layer
    names = {name for name, _ in model.named_parameters()}
    assert "score_linear.weight" in names and "score_linear.bias" not in names
    assert not any("pooler" in n or "classifier" in n for n in names)


def test_lightning_ir_tokenizer_gets_one_int_token(lightning_ir_models):
    model = lightning_ir_models[True]
    batch = model.tokenizer(["do dogs dream"], [["dogs dream during rem sleep like humans do"]])
    ids = batch["input_ids"][0, 0].tolist()
    int_id = model.tokenizer.interaction_token_id
    # recorded from lightning-ir's own tokenizer (CrossEncoderModule.prepare_input)
    assert ids == [2, int_id, 1023, 1083, 1072, 3, 1083, 1072, 1021, 1032, 1037, 1071, 1019, 1075, 1023, 3]
    assert ids.count(int_id) == 1
    assert batch["token_type_ids"][0, 0].tolist() == [0] * 6 + [1] * 10


@pytest.mark.parametrize("grad", [False, True], ids=["inference", "training-path"])
@pytest.mark.parametrize("record", RECORDS, ids=_record_id)
def test_lightning_ir_scores_match_the_home_library(lightning_ir_models, record, grad):
    model = lightning_ir_models[record["sample_missing_docs"]]
    batch = model.tokenizer(record["queries"], record["passages"])
    torch.manual_seed(record["seed"])  # lightning-ir draws the missing [INT]s with torch.normal
    with torch.set_grad_enabled(grad):
        scores = model(**batch).scores.detach()
    for b, expected in enumerate(record["scores"]):
        assert scores[b, : len(expected)].tolist() == pytest.approx(expected, abs=1e-4, rel=0)


def test_lightning_ir_sampling_matters_and_is_seeded(lightning_ir_models):
    """Guards the test above against a fixture in which sampling changes nothing."""
    five = [r for r in RECORDS if r["case"] == "one_query_five"]
    by_key = {(r["sample_missing_docs"], r["seed"]): r["scores"][0] for r in five}
    assert max(abs(a - b) for a, b in zip(by_key[True, 0], by_key[False, 0])) > 0.1
    assert max(abs(a - b) for a, b in zip(by_key[True, 0], by_key[True, 1])) > 0.1
    model = lightning_ir_models[True]
    torch.manual_seed(0)
    first = model.score(five[0]["queries"][0], five[0]["passages"][0])
    torch.manual_seed(0)
    assert model.score(five[0]["queries"][0], five[0]["passages"][0]) == first


def test_lightning_ir_save_and_reload_keeps_the_scores(lightning_ir_models, tmp_path):
    model = lightning_ir_models[False]
    record = next(r for r in RECORDS if r["case"] == "one_query_five" and not r["sample_missing_docs"])
    model.save_pretrained(tmp_path)
    again = load_reranker(tmp_path)
    assert isinstance(again, SetEncoder) and again.config.score_head == "linear"
    scores = again.score(record["queries"][0], record["passages"][0])
    assert scores == pytest.approx(record["scores"][0], abs=1e-4, rel=0)


def test_lightning_ir_unsupported_options_are_config_errors(tmp_path):
    for name in ("model.safetensors", "tokenizer.json", "special_tokens_map.json"):
        (tmp_path / name).write_bytes((FIXTURE / "model" / name).read_bytes())
    config = json.loads((FIXTURE / "model" / "config.json").read_text())
    config["add_extra_token"] = False
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="add_extra_token"):
        load_reranker(tmp_path)


# ---- sentence-transformers CrossEncoder ------------------------------------------------------


@pytest.fixture(scope="module")
def cross_encoder_folder(tmp_path_factory):
    """A tiny random ``cross-encoder/ms-marco-MiniLM-L6-v2``-style folder, saved by sentence-transformers."""
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = tmp_path_factory.mktemp("cross-encoder")
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(tiny_config("bert")).save_pretrained(folder / "hf")
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(folder / "hf")
    encoder = sentence_transformers.CrossEncoder(str(folder / "hf"), max_length=512, device="cpu")
    encoder.save_pretrained(str(folder / "st"))
    return folder / "st", encoder


def test_cross_encoder_folder_scores_as_cross_encoder_predict(cross_encoder_folder):
    folder, _ = cross_encoder_folder
    import sentence_transformers

    encoder = sentence_transformers.CrossEncoder(str(folder), device="cpu")
    model = load_reranker(folder)
    assert isinstance(model, MonoCrossEncoder)
    ours = torch.tensor(model.score(QUERY, PASSAGES))
    assert ours.std() > 1e-2, "random scores should differ for the comparison to mean anything"
    pairs = [(QUERY, p) for p in PASSAGES]
    # 1-label models: predict applies the sigmoid by default (ST >= 3: activation_fn); our score is the logit
    probabilities = torch.tensor(encoder.predict(pairs))
    assert probabilities.min() > 0 and probabilities.max() < 1
    assert torch.allclose(torch.sigmoid(ours), probabilities, atol=1e-6, rtol=0)
    logits = torch.tensor(encoder.predict(pairs, activation_fn=torch.nn.Identity()))
    assert torch.allclose(ours, logits, atol=1e-5, rtol=0)
