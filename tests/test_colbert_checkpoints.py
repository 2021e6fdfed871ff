"""A ColBERT checkpoint keeps its trained projection (issue 18, Part 1 item 3).

The fixtures in ``tests/fixtures/colbert/`` were saved by colbert-ai 0.2.22 and pylate 1.6.0
themselves (``scripts/make_colbert_fixtures.py``, run in a side venv), with each library's own
MaxSim scores for two queries x five passages. Loading either folder with
``ColBERT.from_backbone`` must give the same scores to 1e-4.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from rankdistill.errors import ConfigError
from rankdistill.models import ColBERT
from rankdistill.models.colbert_checkpoint import read_projection
from rankdistill.models.registry import build_reranker

FIXTURES = Path(__file__).parent / "fixtures" / "colbert"
RECORD = json.loads((FIXTURES / "scores.json").read_text())


@pytest.mark.parametrize("library", ["colbert_ai", "pylate"])
def test_checkpoint_scores_match_the_library_that_saved_it(library):
    model = ColBERT.from_backbone(FIXTURES / library)
    assert model.config.dim == RECORD["dim"] == 16
    assert model.config.query_length == RECORD["query_maxlen"] - 3  # [CLS], marker, [SEP]
    assert model.tokenizer.query_tokens == RECORD["query_maxlen"]
    assert model.config.passage_length == RECORD["doc_maxlen"] - 3
    assert model.config.attend_to_mask_tokens is False  # both libraries' default
    for query, expected in zip(RECORD["queries"], RECORD["scores"][library], strict=True):
        got = model.score(query, RECORD["passages"])
        assert got == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("library, marker", [("colbert_ai", "[unused0]"), ("pylate", "[Q] ")])
def test_markers_come_from_the_checkpoint_and_the_projection_is_the_saved_one(library, marker):
    model = build_reranker("colbert", FIXTURES / library)  # the path the training job takes
    assert model.config.query_marker == marker
    ids = model.tokenizer.queries(["what is a cat?"])["input_ids"][0]
    assert int(ids[1]) == model.tokenizer.tokenizer.convert_tokens_to_ids(marker)
    found = read_projection(FIXTURES / library)
    assert found is not None and found.source == library.replace("_", "-")
    assert torch.equal(model.linear.weight.detach(), found.weight)
    assert float(found.weight.std()) > 0.5  # the saved N(0, 1) projection, not a fresh init (std ~0.02-0.2)


def test_a_folder_without_projection_is_refused_unless_new_projection(tmp_path):
    from model_fixtures import minilm_path

    with pytest.raises(ConfigError, match="new_projection: true"):
        ColBERT.from_backbone(minilm_path(), dim=16)
    assert read_projection(minilm_path()) is None
    model = ColBERT.from_backbone(minilm_path(), dim=16, new_projection=True)
    assert model.linear.weight.shape == (16, 384)


def test_dim_must_match_the_saved_projection():
    with pytest.raises(ConfigError, match="dim 128 but the pylate projection"):
        ColBERT.from_backbone(FIXTURES / "pylate", dim=128)


def test_options_override_the_checkpoint_settings_and_survive_a_round_trip(tmp_path):
    model = ColBERT.from_backbone(FIXTURES / "colbert_ai", passage_length=8)
    assert model.config.passage_length == 8 and model.config.query_length == RECORD["query_maxlen"] - 3
    model.save_pretrained(tmp_path / "student")
    loaded = ColBERT.from_pretrained(tmp_path / "student")
    assert torch.equal(loaded.linear.weight, model.linear.weight)
    assert loaded.score("what is a cat?", RECORD["passages"][:2]) == pytest.approx(
        model.score("what is a cat?", RECORD["passages"][:2]), abs=1e-6)
