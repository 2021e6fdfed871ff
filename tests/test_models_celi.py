"""CELI: hand-computed MaxSim, segment masks, s_m = the mono head, loss on both score types."""

from __future__ import annotations

import copy

import pytest
import torch
from model_fixtures import PASSAGES, QUERY, tiny_reranker
from rankdistill.errors import ConfigError
from rankdistill.losses import InfoNCE
from rankdistill.models import CELI, MonoConfig, MonoCrossEncoder, late_interaction
from rankdistill.models.backbone import encode


def test_late_interaction_hand_computed():
    # one joint sequence: [CLS] q1 q2 [SEP] d1 d2 d3 [SEP] [PAD]
    v = torch.tensor([[
        [9.0, 9.0],   # [CLS]  (special: ignored)
        [1.0, 0.0],   # q1
        [0.0, 2.0],   # q2
        [9.0, 9.0],   # [SEP]
        [3.0, 1.0],   # d1
        [-1.0, 4.0],  # d2
        [0.5, 0.5],   # d3
        [9.0, 9.0],   # [SEP]
        [9.0, 9.0],   # [PAD]
    ]])
    query_mask = torch.tensor([[0, 1, 1, 0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    passage_mask = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 0, 0]], dtype=torch.bool)
    # q1 . d = (3, -1, 0.5) -> max 3 ;  q2 . d = (2, 8, 1) -> max 8 ;  s_l = 3 + 8 = 11
    assert late_interaction(v, query_mask, passage_mask).tolist() == [11.0]
    # a sequence with no passage tokens contributes 0
    assert late_interaction(v, query_mask, torch.zeros_like(passage_mask)).tolist() == [0.0]


def test_segment_masks_cover_exactly_query_and_passage_tokens():
    model = tiny_reranker("celi")
    batch = model.tokenizer([QUERY], [["cats purr", ""]])
    ids = batch["input_ids"][0, 0].tolist()
    tok = model.tokenizer.tokenizer
    q_ids = tok(QUERY, add_special_tokens=False)["input_ids"]
    p_ids = tok("cats purr", add_special_tokens=False)["input_ids"]
    assert ids[: 3 + len(q_ids) + len(p_ids)] == [tok.cls_token_id, *q_ids, tok.sep_token_id, *p_ids, tok.sep_token_id]
    qm, pm = batch["query_token_mask"][0, 0], batch["passage_token_mask"][0, 0]
    assert qm.nonzero().flatten().tolist() == list(range(1, 1 + len(q_ids)))
    assert pm.nonzero().flatten().tolist() == list(range(2 + len(q_ids), 2 + len(q_ids) + len(p_ids)))
    assert not batch["passage_token_mask"][0, 1].any()  # empty passage


def test_model_s_l_equals_manual_maxsim_with_hand_set_projection():
    model = tiny_reranker("celi", token_dim=2)
    with torch.no_grad():  # v = (T_0 + 1, T_1 - T_2): a projection written by hand
        model.token_proj.weight.zero_()
        model.token_proj.weight[0, 0] = 1.0
        model.token_proj.weight[1, 1] = 1.0
        model.token_proj.weight[1, 2] = -1.0
        model.token_proj.bias.copy_(torch.tensor([1.0, 0.0]))
    passages = PASSAGES[:3]
    batch = model.tokenizer([QUERY], [passages])
    with torch.no_grad():
        out = model(**batch)
        flat = {k: batch[k][0] for k in ("input_ids", "attention_mask", "token_type_ids")}
        hidden, _ = encode(model.model, flat)
    sep = model.tokenizer.tokenizer.sep_token_id
    for j in range(len(passages)):
        ids = batch["input_ids"][0, j].tolist()
        first_sep = ids.index(sep)
        second_sep = ids.index(sep, first_sep + 1)
        vec = [(hidden[j, t, 0].item() + 1.0, hidden[j, t, 1].item() - hidden[j, t, 2].item()) for t in range(len(ids))]
        expected = 0.0
        for i in range(1, first_sep):  # query tokens: between [CLS] and the first [SEP]
            expected += max(vec[i][0] * vec[t][0] + vec[i][1] * vec[t][1] for t in range(first_sep + 1, second_sep))
        assert out.late_scores[0, j].item() == pytest.approx(expected, abs=1e-4)


def test_mono_part_is_the_cross_encoder_head_and_scores_are_the_sum():
    model = tiny_reranker("celi", kind="electra")
    mono = MonoCrossEncoder(MonoConfig(backbone_config=model.model.config.to_dict()), backbone=copy.deepcopy(model.model))
    mono.eval()
    batch = model.tokenizer([QUERY, "dogs"], [PASSAGES[:3], PASSAGES[2:4]])
    with torch.no_grad():
        out = model(**batch)
        expected_mono = mono(**batch).scores
    assert torch.allclose(out.mono_scores, expected_mono, atol=1e-5)
    valid = out.mask
    assert torch.allclose(out.scores[valid], (out.mono_scores + out.late_scores)[valid], atol=1e-5)
    assert torch.isinf(out.scores[~valid]).all()


def test_training_loss_is_lce_on_s_m_plus_lce_on_s_l():
    model = tiny_reranker("celi").train()
    torch.manual_seed(0)
    batch = model.tokenizer([QUERY], [PASSAGES[:4]])
    out = model(**batch)
    targets = torch.tensor([[1, 0, 0, 0]])
    loss = model.compute_loss(out, targets, InfoNCE())
    expected = InfoNCE()(out.mono_scores, targets) + InfoNCE()(out.late_scores, targets)
    assert torch.allclose(loss, expected)
    loss.backward()
    assert model.token_proj.weight.grad.abs().sum() > 0


def test_options_and_validation():
    model = tiny_reranker("celi", token_dim=5, normalize_token_vectors=True)
    assert model.token_proj.out_features == 5
    vectors = model.token_vectors(torch.randn(2, 3, 32))
    assert torch.allclose(vectors.norm(dim=-1), torch.ones(2, 3), atol=1e-5)
    with pytest.raises(ConfigError, match="token_dim"):
        tiny_reranker("celi", token_dim=0)
    with pytest.raises(ConfigError, match="unknown option"):
        tiny_reranker("celi", tok_dim=8)
    assert CELI.config_class().token_dim == 32  # the paper's D_tok
