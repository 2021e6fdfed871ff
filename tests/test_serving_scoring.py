"""rankdistill.serving without Ray: the batching plan, the Scorer against each model's in-process
``score()``, chunking and truncation, dtypes, request checks and the app config."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from model_fixtures import PASSAGES, QUERY, tiny_reranker
from rankdistill.errors import ConfigError
from rankdistill.serving import (
    RequestError,
    Scorer,
    ScoringConfig,
    ServeAppConfig,
    ServeLimits,
    plan_sub_batches,
)
from rankdistill.serving.batching import padding_fraction
from rankdistill.serving.schemas import RerankV1Request, RerankV2Request, job_from_v1, job_from_v2, order
from rankdistill.serving.scoring import relevance, relevance_scores

WORDS = ["the", "cat", "dog", "house", "water", "tree", "music", "river", "city", "night", "green", "stone", "light", "paper", "horse", "table"]


def test_plan_sub_batches_by_hand():
    lengths = [5, 9, 3, 9, 4, 7]
    plan = plan_sub_batches(lengths, token_budget=20)
    # sorted (stable) 9(1) 9(3) 7(5) 5(0) 4(4) 3(2): [9, 9] = 18 slots; + 7 -> 27 > 20, cut; [7, 5] -> 14,
    # + 4 -> 21 > 20, cut; [4, 3] -> 8
    assert [(b.rows, b.width) for b in plan] == [((1, 3), 9), ((5, 0), 7), ((4, 2), 4)]
    assert padding_fraction(lengths, plan) == pytest.approx(1 - 37 / (18 + 14 + 8))
    assert [b.rows for b in plan_sub_batches(lengths, 1000, max_rows=4)] == [(1, 3, 5, 0), (4, 2)]
    assert [b.rows for b in plan_sub_batches([50, 2], 10)] == [(0,), (1,)]  # a row over budget alone
    # padding cap 10 %: [9, 9] 0 pad; + 7 -> 2 of 27 slots (7 %) ok; + 5 -> 6 of 36 (17 %) cut;
    # [5, 4] -> 1 of 10 (10 %) ok; + 3 -> 3 of 15 (20 %) cut; [3]
    capped = plan_sub_batches(lengths, 1000, max_padding=0.10)
    assert [(b.rows, b.width) for b in capped] == [((1, 3, 5), 9), ((0, 4), 5), ((2,), 3)]
    assert padding_fraction(lengths, capped) == pytest.approx(1 - 37 / (27 + 10 + 3))
    with pytest.raises(ValueError):
        plan_sub_batches([1], 0)


@pytest.mark.parametrize("name", ["mono", "celi", "set-encoder", "listconranker", "duo"])
def test_scorer_equals_in_process_score(name):
    model = tiny_reranker(name)
    ref = model.score(QUERY, PASSAGES)
    scorer = Scorer(model, ScoringConfig(token_budget=30, precision="fp32"))
    got = [d.score for d in scorer.score(QUERY, PASSAGES)]
    assert got == pytest.approx(ref, abs=1e-5)


def test_pointwise_requests_are_flattened_across_requests():
    model = tiny_reranker("mono")
    scorer = Scorer(model, ScoringConfig(token_budget=10_000, max_padding=1.0, precision="fp32"))
    items = [scorer.prepare(QUERY, PASSAGES), scorer.prepare("dogs", PASSAGES[:2])]
    out = scorer.score_prepared(items)
    assert scorer.last_stats.forward_passes == 1 and scorer.last_stats.rows == 7
    assert [d.score for d in out[1]] == pytest.approx(model.score("dogs", PASSAGES[:2]), abs=1e-5)
    assert [d.score for d in out[0]] == pytest.approx(model.score(QUERY, PASSAGES), abs=1e-5)


def test_chunking_windows_and_truncation():
    model = tiny_reranker("mono", passage_length=8)
    scorer = Scorer(model, ScoringConfig(chunk_overlap=2, precision="fp32"))
    doc = " ".join(WORDS)  # 16 single-token words: windows [0, 8), [6, 14), [12, 16)
    windows = [" ".join(WORDS[0:8]), " ".join(WORDS[6:14]), " ".join(WORDS[12:16])]
    (chunked,) = scorer.score(QUERY, [doc], chunking=True)
    assert (chunked.chunks, chunked.tokens, chunked.truncated) == (3, 16, False)
    assert chunked.score == pytest.approx(max(model.score(QUERY, windows)), abs=1e-5)
    (cut,) = scorer.score(QUERY, [doc])
    assert (cut.chunks, cut.truncated) == (1, True)
    assert cut.score == pytest.approx(model.score(QUERY, [doc])[0], abs=1e-5)
    (limited,) = scorer.score(QUERY, [doc], max_tokens_per_doc=3)
    assert limited.truncated and limited.score == pytest.approx(model.score(QUERY, ["the cat dog"])[0], abs=1e-5)
    few = Scorer(model, ScoringConfig(chunk_overlap=2, max_chunks=2, precision="fp32"))
    (capped,) = few.score(QUERY, [doc], chunking=True)
    assert (capped.chunks, capped.truncated) == (2, True)


@pytest.mark.parametrize("architecture", ["mono", "set-encoder", "duo"])
def test_served_scores_equal_reranker_score_under_the_same_precision(architecture):
    """One precision rule (rankdistill.precision): the scorer keeps fp32 weights and autocasts, as
    Reranker.use_precision does offline, so its bf16 scores are the model's own bf16 scores (to
    bf16's rounding between differently padded batches), not those of a weight-cast copy."""
    passages = PASSAGES[:3] if architecture == "duo" else PASSAGES
    offline = tiny_reranker(architecture)
    assert offline.use_precision("bf16") == "bf16"
    want = offline.score(QUERY, passages)
    scorer = Scorer(tiny_reranker(architecture), ScoringConfig(precision="bf16"))
    assert scorer.precision == "bf16" and scorer.dtype == torch.bfloat16
    assert {p.dtype for p in scorer.model.parameters()} == {torch.float32}  # autocast, weights kept
    got = [d.score for d in scorer.score(QUERY, passages)]
    assert got == pytest.approx(want, abs=2e-2)
    fp32 = tiny_reranker(architecture).score(QUERY, passages)
    assert got != pytest.approx(fp32, abs=1e-6)  # bf16 did run
    exact = Scorer(tiny_reranker(architecture), ScoringConfig(precision="fp32"))
    assert [d.score for d in exact.score(QUERY, passages)] == pytest.approx(fp32, abs=1e-5)
    with pytest.raises(ConfigError, match="scoring.precision"):
        ScoringConfig(precision="float32")


def test_relevance_mapping():
    assert relevance(0.0) == 0.5 and relevance(2.0) == pytest.approx(1 / (1 + math.exp(-2)))
    assert relevance(-800.0) == 0.0 and relevance(800.0) == 1.0
    assert relevance_scores([2.0, 0.0, 1.0], "pair_sum") == [1.0, 0.0, 0.5]
    assert order([0.1, 0.9, 0.5, 0.9], 3) == [1, 3, 2]


def test_request_checks():
    limits = ServeLimits(max_documents=3, max_document_chars=10)
    job = job_from_v1(RerankV1Request(query="q", documents=["a", {"text": "b"}], max_chunks_per_doc=3), limits)
    assert job.documents == ["a", "b"] and job.chunking is True
    with pytest.raises(RequestError) as err:
        job_from_v1(RerankV1Request(query="q", documents=["a"] * 4), limits)
    assert err.value.status == 413 and "4 documents" in err.value.message
    with pytest.raises(RequestError) as err:
        job_from_v2(RerankV2Request(query="q", documents=["a"], top_n=0), limits)
    assert err.value.status == 422 and "top_n" in err.value.message
    import pickle

    again = pickle.loads(pickle.dumps(RequestError(429, "full", {"Retry-After": "1"})))
    assert (again.status, again.message, again.headers) == (429, "full", {"Retry-After": "1"})


def test_app_config_errors():
    with pytest.raises(ConfigError, match="models"):
        ServeAppConfig.from_dict({})
    with pytest.raises(ConfigError, match="default_model"):
        ServeAppConfig.from_dict({"models": {"a": "/x"}, "default_model": "b"})
    with pytest.raises(ConfigError, match="tokn_budget"):
        ServeAppConfig.from_dict({"models": {"a": "/x"}, "scoring": {"tokn_budget": 5}})
    with pytest.raises(ConfigError, match="modles"):
        ServeAppConfig.from_dict({"modles": {}})
    config = ServeAppConfig.from_dict({"models": {"a": "/x", "b": "models:/b/1"}, "scoring": {"token_budget": 64}})
    assert config.default_model == "a" and config.scoring.token_budget == 64


def test_model_uri_errors(tmp_path):
    from rankdistill.tracking.models import resolve_model_source

    with pytest.raises(ConfigError, match="does not exist"):
        resolve_model_source(tmp_path / "missing")
    with pytest.raises(ConfigError, match="models:/NAME/VERSION"):
        resolve_model_source("models:/a/b/c")
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    with pytest.raises(ConfigError, match="cannot resolve"):
        resolve_model_source("models:/nope/1", tracking_uri=uri)


def test_shipped_serve_config_is_valid():
    from pathlib import Path

    import yaml
    from ray.serve.schema import ServeDeploySchema

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "serve" / "config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(raw)
    assert schema.http_options.host == "127.0.0.1"
    app = raw["applications"][0]
    config = ServeAppConfig.from_dict(app["args"])
    assert config.default_model in config.models and config.auth_token_env == "RANKDISTILL_SERVE_TOKEN"
    reranker = next(d for d in app["deployments"] if d["name"] == "RerankerDeployment")
    assert reranker["max_ongoing_requests"] >= 1 and reranker["max_queued_requests"] > 0


def test_model_uri_without_tracking_uri_uses_the_platform_store(tmp_path, monkeypatch):
    """With no tracking URI given or exported, a models:/ URI is looked up in the platform's store
    ($RANKDISTILL_HOME), not in MLflow's own default, which would create ./mlflow.db in the cwd."""
    from rankdistill.tracking.models import resolve_model_source

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="cannot resolve"):
        resolve_model_source("models:/nope/1")
    assert not (tmp_path / "mlflow.db").exists()
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def gpu_visible(monkeypatch):
    """``torch.cuda`` answering as on a replica with one bf16-capable GPU — for the placement
    decision only (nothing is moved to a device here)."""
    state = {"bf16": True}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: state["bf16"])
    return state


def test_placement_uses_the_replicas_gpu_in_bf16_when_supported(gpu_visible):
    from rankdistill.serving.scoring import placement

    assert placement("auto", "auto") == (torch.device("cuda"), "bf16")
    assert placement("cuda", "fp16") == (torch.device("cuda"), "fp16")
    assert placement("cpu", "fp32") == (torch.device("cpu"), "fp32")
    gpu_visible["bf16"] = False  # e.g. a T4 / V100: bf16 only by emulation
    assert placement("auto", "auto") == (torch.device("cuda"), "fp32")


def test_placement_without_a_gpu_stays_on_the_cpu(monkeypatch):
    from rankdistill.serving.scoring import placement

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    device, precision = placement("auto", "auto")
    assert device == torch.device("cpu")
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else []
    assert precision == ("bf16" if ("avx512_bf16" in flags or "amx_tile" in flags) else "fp32")
    with pytest.raises(ConfigError, match="scoring.device.*no GPU"):
        placement("cuda", "auto")
    with pytest.raises(ConfigError, match="scoring.device"):
        ScoringConfig(device="tpu")


def test_scorer_puts_the_model_on_the_chosen_device_and_precision():
    model = tiny_reranker("mono")
    reference = Scorer(tiny_reranker("mono"), ScoringConfig(precision="fp32", device="cpu"))
    scorer = Scorer(model, ScoringConfig(precision="bf16", device="cpu"))
    assert scorer.device == torch.device("cpu") and scorer.precision == "bf16"
    assert next(scorer.model.parameters()).dtype == torch.float32
    docs = ["a cat is a small mammal", "dogs bark", "the market fell"]
    fast = [d.score for d in scorer.score("what is a cat", docs)]
    exact = [d.score for d in reference.score("what is a cat", docs)]
    assert sorted(range(3), key=fast.__getitem__) == sorted(range(3), key=exact.__getitem__)


def test_split_prepared_slices_cover_every_document_within_the_budget():
    from rankdistill.serving.slicing import split_prepared

    model = tiny_reranker("celi", passage_length=16)
    scorer = Scorer(model, ScoringConfig(token_budget=40, chunk_overlap=4, precision="fp32"))
    long_doc = " ".join(WORDS * 2)  # 32 tokens -> 3 windows of 16 (stride 12)
    docs = [*PASSAGES, long_doc, *PASSAGES]
    prepared = scorer.prepare(QUERY, docs, chunking=True)
    slices = split_prepared(prepared, 40)
    assert len(slices) > 1
    assert sum(s.num_documents for s in slices) == len(docs)
    assert [c for s in slices for c in s.chunks] == prepared.chunks  # a document's windows stay together
    for s in slices:  # within the budget unless one document alone costs more
        assert s.num_tokens <= 40 or s.num_documents == 1
        assert s.owner == sorted(s.owner) and set(s.owner) == set(range(s.num_documents))
    whole = scorer.score_prepared([prepared])[0]
    parts = [d for s in slices for d in scorer.score_prepared([s])[0]]
    assert [d.score for d in parts] == pytest.approx([d.score for d in whole], abs=1e-5)
    assert [(d.chunks, d.truncated, d.tokens) for d in parts] == [(d.chunks, d.truncated, d.tokens) for d in whole]
    # a listwise model's request is never cut (its scores depend on the whole list)
    listwise = Scorer(tiny_reranker("set-encoder"), ScoringConfig(precision="fp32")).prepare(QUERY, PASSAGES * 20)
    assert split_prepared(listwise, 10) == [listwise]


def test_model_names_aliases_and_sources(tmp_path):
    config = ServeAppConfig.from_dict({"models": {"a": "/x", "b": "models:/b/1"}, "model_aliases": {"rerank-v3.5": "b"}})
    assert config.resolve_model(None) == "a" and config.resolve_model("rerank-v3.5") == "b"
    with pytest.raises(RequestError) as err:
        config.resolve_model("gpt-9")
    assert err.value.status == 404 and "gpt-9" in err.value.message and "rerank-v3.5" in err.value.message
    lax = ServeAppConfig.from_dict({"models": {"a": "/x"}, "strict_model": False})
    assert lax.resolve_model("rerank-english-v3.0") == "a"
    with pytest.raises(ConfigError) as err:
        ServeAppConfig.from_dict({"models": {"a": "/x"}, "model_aliases": {"c": "nope"}})
    assert err.value.key == "model_aliases.c"
    # a missing model folder fails at start, naming the model and the absolute path
    with pytest.raises(ConfigError) as err:
        ServeAppConfig.from_dict({"models": {"m": "outputs/none/model"}}).check_model_sources(tmp_path)
    assert err.value.key == "models.m" and str(tmp_path / "outputs/none/model") in str(err.value)
    tiny_reranker("mono").save_pretrained(tmp_path / "saved")
    ok = ServeAppConfig.from_dict({"models": {"m": "saved", "r": "models:/x/1"}}).check_model_sources(tmp_path)
    assert ok.models == {"m": str(tmp_path / "saved"), "r": "models:/x/1"}


def test_build_app_refuses_a_missing_model_folder(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from serve.app import build_app

    with pytest.raises(ConfigError, match="does not exist") as err:
        build_app({"models": {"demo": str(tmp_path / "outputs/train_reranker/model")}})
    assert err.value.key == "models.demo"


def test_shipped_config_serves_what_make_demo_trains():
    """serve/config.yaml's models are the folders `make demo` writes (its TEACHERS targets)."""
    import re
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    teachers = re.search(r"^TEACHERS := (.*)$", (root / "Makefile").read_text(), re.MULTILINE).group(1).split()
    made = {str(Path(t).parent) for t in teachers}
    app = yaml.safe_load((root / "serve" / "config.yaml").read_text())["applications"][0]
    models = app["args"]["models"]
    assert set(models.values()) <= made and models[app["args"]["default_model"]] in made
    assert app["runtime_env"]["env_vars"]["OMP_WAIT_POLICY"] == "PASSIVE"


def test_response_shapes_and_score_kinds():
    from rankdistill.serving.schemas import (
        RerankJob,
        Scored,
        cohere_response,
        describe_score,
        search_units,
        tei_response,
    )
    from rankdistill.serving.scoring import DocumentScore

    scores = [DocumentScore(s, 3, False, c) for s, c in ((0.0, 1), (2.0, 60), (-1.0, 40))]
    assert search_units(scores) == 2  # 101 scored texts -> 2 units of 100
    scored = Scored(scores, "logit", "m")
    job = RerankJob("q", ["a", "b", "c"], top_n=2, originals=["a", {"text": "b", "id": 1}, "c"])
    v1 = cohere_response("1", job, scored, True)
    assert [r["index"] for r in v1["results"]] == [1, 0]
    assert v1["results"][0] == {"index": 1, "relevance_score": pytest.approx(1 / (1 + math.exp(-2))),
                                "document": {"text": "b", "id": 1}}
    assert v1["meta"]["billed_units"] == {"search_units": 2}
    assert tei_response(job, scored, True, False) == [{"index": 1, "score": 2.0}, {"index": 0, "score": 0.0},
                                                      {"index": 2, "score": -1.0}]
    # duo: the pair sum over k-1 = 2 others, scaled by k-1 (not a sigmoid)
    duo = Scored([DocumentScore(s, 3, False, 1) for s in (1.5, 0.5, 1.0)], "pair_sum", "d")
    assert duo.relevance == pytest.approx([0.75, 0.25, 0.5])
    assert describe_score("pair_sum")["relevance_score"] == "pair_sum / (k-1)"
    assert describe_score("logit")["relevance_score"] == "sigmoid(logit)"


# ---- issue 30: pairwise cost, echoed fields, models that cannot load, Hub ids ------------------


def test_duo_pairs_cost_slices_and_aggregation_equal_the_models_score():
    """A duo request costs k(k-1) ordered pairs of (query + a + b + 3 special tokens); its pair
    slices stay within the budget, cover every pair once in order, and aggregate to model.score."""
    from rankdistill.serving.slicing import split_pairs

    model = tiny_reranker("duo", seed=3)
    scorer = Scorer(model, ScoringConfig(token_budget=64, precision="fp32"))
    assert scorer.pairwise
    prepared = scorer.prepare(QUERY, PASSAGES)
    k = len(PASSAGES)
    assert prepared.pairs == [(a, b) for a in range(k) for b in range(k) if a != b] and len(prepared.pairs) == 20
    backend = scorer.tokenizer._backend
    q = len(backend.encode(QUERY, add_special_tokens=False).ids)
    doc = [len(backend.encode(p, add_special_tokens=False).ids) for p in PASSAGES]
    assert prepared.pair_lengths == [q + doc[a] + doc[b] + 3 for a, b in prepared.pairs]
    assert prepared.cost == k * (k - 1) * (q + 3) + 2 * (k - 1) * sum(doc)  # every passage in 2(k-1) pairs
    slices = split_pairs(prepared, 64)
    assert [p for s in slices for p in s.pairs] == prepared.pairs
    assert all(s.cost <= 64 for s in slices) and len(slices) > 1
    probabilities = [p for s in slices for p in scorer.score_pairs([s])[0]]
    got = scorer.aggregate_pairs(prepared, probabilities)
    assert [d.score for d in got] == pytest.approx(model.score(QUERY, PASSAGES), abs=1e-5)
    # a single pair costing more than the budget gets a slice of its own
    assert [len(s.pairs) for s in split_pairs(prepared, 1)] == [1] * 20
    # pointwise requests carry no pairs; their cost is their rows' tokens
    mono = Scorer(tiny_reranker("mono"), ScoringConfig(precision="fp32")).prepare(QUERY, PASSAGES)
    assert mono.pairs == [] and mono.cost == mono.num_tokens


def test_echoed_document_fields_must_be_valid_unicode():
    """A v1 document object is echoed back: a lone surrogate in a field's name or value is a 422."""
    limits = ServeLimits()
    for doc, where in (({"text": "cat", "\ud800": 1}, "documents[0]: a field name"),
                       ({"text": "cat", "title": "a\udfffb"}, "documents[0].title"),
                       ({"text": "cat", "meta": {"tags": ["ok", "\ud800"]}}, "documents[0].meta.tags[1]")):
        with pytest.raises(RequestError) as err:
            job_from_v1(RerankV1Request(query="cat", documents=[doc], return_documents=True), limits)
        assert err.value.status == 422 and err.value.message.startswith(where), err.value.message
        assert "lone surrogate" in err.value.message
    ok = job_from_v1(RerankV1Request(query="cat", documents=[{"text": "cat", "é": "ü"}]), limits)
    assert ok.originals == [{"text": "cat", "é": "ü"}]


def test_a_model_folder_without_weights_fails_at_start_unless_lazy(tmp_path):
    """config.json but no weights: build_app fails naming the model and what is missing; marked
    lazy, it is neither checked nor loaded at start (the replica answers 503 for it)."""
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from serve.app import build_app

    tiny_reranker("mono").save_pretrained(tmp_path / "good")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text(json.dumps({"model_type": "duo"}))
    args = {"models": {"good": str(tmp_path / "good"), "broken": str(tmp_path / "broken")}}
    with pytest.raises(ConfigError, match="has no model weights") as err:
        build_app(args)
    assert err.value.key == "models.broken" and str(tmp_path / "broken") in str(err.value)
    lazy = {"models": {"good": str(tmp_path / "good"), "broken": {"source": str(tmp_path / "broken"), "lazy": True}}}
    config = ServeAppConfig.from_dict(lazy).check_model_sources()
    assert config.lazy_models == ["broken"] and config.models["broken"] == str(tmp_path / "broken")
    build_app(lazy)  # no error
    with pytest.raises(ConfigError) as err:
        ServeAppConfig.from_dict({"models": {"a": {"source": "/x", "lazy": True}}})
    assert err.value.key == "models.a.lazy"  # the default model is loaded at start
    with pytest.raises(ConfigError) as err:
        ServeAppConfig.from_dict({"models": {"a": "/x", "b": {"path": "/y"}}})
    assert err.value.key == "models.b"
    with pytest.raises(ConfigError) as err:
        ServeAppConfig.from_dict({"models": {"a": "/x"}, "limits": {"max_pairs": 0}})
    assert err.value.key == "limits.max_pairs"


def test_serve_models_accept_a_hugging_face_hub_id(tmp_path, monkeypatch):
    """A Hub id in Serve's model list goes to the loader as a Hub id: offline and not cached, the
    error names the id and the Hugging Face cache (not 'model folder ... does not exist'); cached,
    it is checked in its snapshot and kept as the id (the replicas resolve it the same way)."""
    import sys
    from pathlib import Path

    from huggingface_hub import constants

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from serve.app import build_app

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        build_app({"models": {"hub": "acme/tiny-reranker"}})
    assert err.value.key == "models.hub" and "'acme/tiny-reranker'" in str(err.value)
    assert "Hugging Face cache" in str(err.value) and "does not exist" not in str(err.value)
    # the same id as a cached snapshot (the layout huggingface_hub writes)
    snapshot = cache / "models--acme--tiny-reranker" / "snapshots" / ("0" * 40)
    tiny_reranker("mono").save_pretrained(snapshot)
    (cache / "models--acme--tiny-reranker" / "refs").mkdir()
    (cache / "models--acme--tiny-reranker" / "refs" / "main").write_text("0" * 40)
    config = ServeAppConfig.from_dict({"models": {"hub": "acme/tiny-reranker"}}).check_model_sources()
    assert config.models == {"hub": "acme/tiny-reranker"}
    build_app({"models": {"hub": "acme/tiny-reranker"}})
