"""Listwise sliding windows in lockstep, pairwise sampling / both-order scoring, pointwise scores;
and the exact replay of RankVicuna's recorded TREC-DL 2019 windows."""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict

import pytest
from conftest import shared_dataset
from rankdistill.data import (
    Candidate,
    CandidateList,
    Query,
    Run,
    candidate_lists,
    needed_documents,
    read_trec_run,
)
from rankdistill.errors import ConfigError
from rankdistill.evaluation import evaluate
from rankdistill.teachers import (
    BackendConfig,
    ListwiseConfig,
    PairwiseConfig,
    TeacherBackend,
    load_template,
    make_backend,
    rerank_listwise,
    sample_pairs,
    score_pairs,
    score_points,
    sliding_windows,
)
from rankdistill.teachers.backends.base import as_prompts
from rankdistill.teachers.pairwise import eligible_pairs, pair_units
from rankdistill.teachers.pointwise import PointwiseConfig, point_units


class ScriptedBackend(TeacherBackend):
    """Ranks a window by a hidden relevance per doc id (higher first); logprobs from the same."""

    name = "scripted"

    def __init__(self, relevance: dict[str, float], response=None, bias: float = 0.0):
        super().__init__()
        self.relevance = relevance
        self.response = response
        self.bias = bias
        self.batch_sizes: list[int] = []

    def generate(self, prompts, max_new_tokens):
        items = as_prompts(prompts)
        self._count(items)
        self.batch_sizes.append(len(items))
        out = []
        for p in items:
            if self.response is not None:
                out.append(self.response(p))
                continue
            order = sorted(range(len(p.docids)), key=lambda i: -self.relevance[p.docids[i]])
            out.append(" > ".join(f"[{i + 1}]" for i in order))
        return out

    def token_logprobs(self, prompts, candidate_tokens):
        items = as_prompts(prompts)
        self._count(items)
        first, second = candidate_tokens
        out = []
        for p in items:
            if len(p.docids) == 2:  # pairwise: first-shown passage gets a position bias
                out.append({first: self.relevance[p.docids[0]] + self.bias, second: self.relevance[p.docids[1]]})
            else:  # pointwise yes/no
                out.append({first: self.relevance[p.docids[0]], second: -self.relevance[p.docids[0]]})
        return out


def make_list(qid: str, n: int) -> CandidateList:
    return CandidateList(Query(qid, f"query {qid}"),
                         [Candidate(f"{qid}-d{i}", float(n - i), f"text of {qid} doc {i}") for i in range(n)])


def sequential_reference(docids, relevance, windows, passes):
    """rank_llm's sequential sliding window (one query at a time), for comparison."""
    ranking = list(docids)
    for _ in range(passes):
        for s, e in windows:
            ranking[s:e] = sorted(ranking[s:e], key=lambda d: -relevance[d])
    return ranking


def test_sliding_windows_match_rank_llm():
    assert sliding_windows(100, 20, 10) == [(80, 100), (70, 90), (60, 80), (50, 70), (40, 60), (30, 50),
                                           (20, 40), (10, 30), (0, 20)]
    assert sliding_windows(15, 20, 10) == [(0, 15)]
    assert sliding_windows(100, 20, 10, rank_end=30) == [(10, 30), (0, 20)]
    assert sliding_windows(10, 4, 4) == [(6, 10), (2, 6), (0, 2)]
    assert sliding_windows(10, 4, 2, direction="front_to_back") == [(0, 4), (2, 6), (4, 8), (6, 10)]
    assert sliding_windows(1, 20, 10) == [] and sliding_windows(0, 20, 10) == []
    assert sliding_windows(30, 20, 10, rank_start=5) == [(10, 30), (5, 20)]


@pytest.mark.parametrize("passes,direction", [(1, "back_to_front"), (2, "back_to_front"), (1, "front_to_back")])
def test_lockstep_windows_equal_sequential_reranking(passes, direction):
    lists = [make_list("q1", 10), make_list("q2", 10), make_list("q3", 6)]
    relevance = {c.docid: ((i * 7919) % 13) / 13 for cl in lists for i, c in enumerate(cl.candidates)}
    backend = ScriptedBackend(relevance)
    config = ListwiseConfig(window_size=4, stride=2, passes=passes, rank_end=None, direction=direction)
    results = rerank_listwise(lists, backend, load_template("rankzephyr"), config)
    for cl, res in zip(lists, results, strict=True):
        windows = sliding_windows(len(cl), 4, 2, direction=direction)
        assert res.candidates.docids == sequential_reference(cl.docids, relevance, windows, passes)
        assert [(w.pass_index, w.window_index, w.start, w.end) for w in res.windows] == \
            [(p, i, s, e) for p in range(passes) for i, (s, e) in enumerate(windows)]
        assert all(w.repair == "ok" for w in res.windows)
        assert res.windows[-1].ranking_after == res.candidates.docids
    # every round carries one window of every unfinished query: full batches, then the long lists
    long_windows = len(sliding_windows(10, 4, 2, direction=direction)) * passes
    short_windows = len(sliding_windows(6, 4, 2, direction=direction)) * passes
    assert backend.batch_sizes == [3] * short_windows + [2] * (long_windows - short_windows)


def test_window_records_keep_the_raw_response_and_repairs():
    cl = make_list("q", 5)
    backend = ScriptedBackend({}, response=lambda p: "[2] > [2] > [9]")
    (res,) = rerank_listwise([cl], backend, load_template("rankvicuna"),
                             ListwiseConfig(window_size=5, stride=5, rank_end=None))
    (w,) = res.windows
    assert w.response == "[2] > [2] > [9]" and w.repair == "missing"
    assert (w.n_out_of_range, w.n_repeats, w.n_missing) == (1, 1, 4)
    assert w.docids_in == cl.docids and w.ranking_out == ["q-d1", "q-d0", "q-d2", "q-d3", "q-d4"]


def test_pair_sampling_is_seeded_and_respects_delta():
    config = PairwiseConfig(top_k=30, delta=5, pairs_per_query=20, seed=3)
    pairs = sample_pairs("q1", 50, config)
    assert len(pairs) == 20 == len(set(pairs)) and pairs == sorted(pairs)
    assert all(0 <= i < j < 30 and j - i < 5 for i, j in pairs)
    assert pairs == sample_pairs("q1", 50, config)
    assert pairs != sample_pairs("q2", 50, config)
    assert pairs != sample_pairs("q1", 50, PairwiseConfig(top_k=30, delta=5, pairs_per_query=20, seed=4))
    assert sample_pairs("q", 4, PairwiseConfig(delta=10, pairs_per_query=50)) == eligible_pairs(4, 100, 10)
    assert len(eligible_pairs(4, 100, 10)) == 6


def test_each_pairdistill_iteration_draws_new_pair_positions():
    import dataclasses

    first = PairwiseConfig(top_k=30, delta=5, pairs_per_query=20, seed=3)
    second = dataclasses.replace(first, iteration=2)
    assert first.iteration == 1
    one, two = sample_pairs("q1", 50, first), sample_pairs("q1", 50, second)
    # iteration 1 draws what the (seed, qid) seeding always drew; iteration 2 draws anew, seeded
    eligible = eligible_pairs(50, 30, 5)
    assert one == sorted(random.Random("3:q1").sample(eligible, 20))
    assert two != one and two == sample_pairs("q1", 50, second) and len(set(two)) == 20
    assert all(0 <= i < j < 30 and j - i < 5 for i, j in two)
    assert sample_pairs("q1", 50, dataclasses.replace(first, iteration=3)) not in (one, two)
    with pytest.raises(ConfigError, match="pairwise.iteration"):
        dataclasses.replace(first, iteration=0).check()


def test_both_orders_cancel_the_position_bias():
    cl = make_list("q", 6)
    relevance = {c.docid: float(i % 3) for i, c in enumerate(cl.candidates)}
    config = PairwiseConfig(top_k=6, delta=6, pairs_per_query=100, seed=0)
    units = pair_units(cl, config)
    biased = ScriptedBackend(relevance, bias=2.0)
    rows = score_pairs(units, biased, load_template("duot5", {"truncation": {"unit": "words"}}), config)
    assert biased.prompts_seen == 2 * len(units) == 30
    for row in rows:
        da, db = relevance[row["docid_a"]], relevance[row["docid_b"]]
        if da == db:
            assert row["p_a_wins"] == pytest.approx(0.5)  # bias cancels exactly
        else:
            assert (row["p_a_wins"] > 0.5) == (da > db)
        assert row["logprob_a_wins"] == pytest.approx(math.log(row["p_a_wins"]))
        assert row["logprob_first_ab"] == da + 2.0 and row["logprob_first_ba"] == db + 2.0
    one_order = score_pairs(units, ScriptedBackend(relevance, bias=2.0), load_template("duot5", {"truncation": {"unit": "words"}}),
                            PairwiseConfig(top_k=6, delta=6, pairs_per_query=100, both_orders=False))
    assert all(r["logprob_first_ba"] is None for r in one_order)
    assert any(r["p_a_wins"] > 0.5 for r in one_order if relevance[r["docid_a"]] == relevance[r["docid_b"]])


def test_pointwise_score_is_the_normalised_yes_logprob():
    cl = make_list("q", 4)
    relevance = {c.docid: 0.5 * i for i, c in enumerate(cl.candidates)}
    units = point_units(cl, PointwiseConfig(top_k=3))
    rows = score_points(units, ScriptedBackend(relevance), load_template("monot5", {"truncation": {"unit": "words"}}))
    assert [r["docid"] for r in rows] == cl.docids[:3]
    for r in rows:
        y, n = r["logprob_yes"], r["logprob_no"]
        assert r["score"] == pytest.approx(y - math.log(math.exp(y) + math.exp(n)))


@pytest.mark.shared_data
def test_replaying_rankvicuna_on_dl19_bm25_presents_the_recorded_windows_and_gives_0_6682():
    _, folder = shared_dataset("trec-dl-2019-passage")
    run = read_trec_run(folder.root / "runs" / "bm25.trec")
    docs = needed_documents(folder.iter_corpus(), {d for q in run for d in run[q]})
    lists = list(candidate_lists(run, folder.queries(), docs, k=100))
    recording = folder.root / "teacher" / "rankvicuna-7b.bm25.windows.jsonl"
    backend = make_backend(BackendConfig(name="replay", replay_file=str(recording)))
    results = rerank_listwise(lists, backend, load_template("rankvicuna"), ListwiseConfig())

    expected = defaultdict(list)
    for line in recording.read_text().splitlines():
        rec = json.loads(line)
        expected[rec["qid"]].append((rec["start"], rec["end"], tuple(rec["docids"])))
    presented = defaultdict(list)
    for res in results:
        for w in res.windows:
            presented[w.qid].append((w.start, w.end, tuple(w.docids_in)))
    assert presented == expected  # same windows, same doc ids, same order, nothing else
    assert backend.calls == 9 and backend.prompts_seen == 387  # 43 queries in lockstep
    reranked = Run.from_candidate_lists(r.candidates for r in results)
    result = evaluate(reranked, folder.qrels("test"), ["nDCG@10"], relevance_threshold=2)
    assert round(result.aggregate["nDCG@10"], 4) == 0.6682


@pytest.mark.shared_data
def test_replay_on_a_run_with_tied_scores_presents_the_recorded_windows(tmp_path):
    """BM25's DL19 run with its scores floored to integers (4,274 of 4,300 lines then tie with
    another line of their query) and its lines reversed: the rank column still orders the
    candidates, so the 387 recorded windows are presented as recorded (the strict replay raises
    on any other) and the replay still gives 0.6682. Ordering ties by docid (the old rule)
    changes the first window of all 43 queries."""
    _, folder = shared_dataset("trec-dl-2019-passage")
    lines = (folder.root / "runs" / "bm25.trec").read_text().splitlines()
    tied_lines = []
    for line in lines:
        qid, q0, docid, rank, score, tag = line.split()
        tied_lines.append(f"{qid} {q0} {docid} {rank} {math.floor(float(score))} {tag}")
    (tmp_path / "bm25.tied.trec").write_text("\n".join(reversed(tied_lines)) + "\n")  # file order reversed too
    run = read_trec_run(tmp_path / "bm25.tied.trec")
    tied_queries = {q for q in run if len(set(run[q].values())) < len(run[q])}
    assert len(tied_queries) == 43
    assert any([d for d, _ in run.ranked(q)] != [d for d, _ in run.trec_eval_ranked(q)] for q in run)
    docs = needed_documents(folder.iter_corpus(), {d for q in run for d in run[q]})
    lists = list(candidate_lists(run, folder.queries(), docs, k=100))
    recording = folder.root / "teacher" / "rankvicuna-7b.bm25.windows.jsonl"
    backend = make_backend(BackendConfig(name="replay", replay_file=str(recording)))  # strict
    results = rerank_listwise(lists, backend, load_template("rankvicuna"), ListwiseConfig())
    assert backend.prompts_seen == 387 and len(set(backend.presented)) == 387
    reranked = Run.from_candidate_lists(r.candidates for r in results)
    result = evaluate(reranked, folder.qrels("test"), ["nDCG@10"], relevance_threshold=2)
    assert round(result.aggregate["nDCG@10"], 4) == 0.6682


def test_listwise_prompts_are_fitted_to_the_teachers_context():
    """With a tokenizer, every window's prompt plus rank_llm's answer estimate fits context_size:
    the 20 passages of 200 words are cut to the same shorter length; without a context limit
    (or without a tokenizer) the 200 words are sent as they are."""
    from teacher_fixtures import minilm_tokenizer

    tok = minilm_tokenizer()
    words = " ".join(f"word{i}" for i in range(200))
    cl = CandidateList(Query("q", "query q"), [Candidate(f"d{i}", float(30 - i), words) for i in range(30)])
    relevance = {c.docid: -i for i, c in enumerate(cl.candidates)}
    template = load_template("rankzephyr")

    def prompts_sent(context_size, tokenizer):
        backend = ScriptedBackend(relevance)
        backend.tokenizer = tokenizer
        sent = []
        original = backend.generate

        def generate(prompts, max_new_tokens):
            sent.extend(as_prompts(prompts))
            return original(prompts, max_new_tokens)

        backend.generate = generate
        rerank_listwise([cl], backend, template, ListwiseConfig(window_size=20, stride=10, context_size=context_size))
        return [p.text for p in sent]

    fitted = prompts_sent(2048, tok)
    budget = 2048 - len(tok.encode(" > ".join(f"[{i + 1}]" for i in range(20)), add_special_tokens=False))
    assert len(fitted) == 2 and all(len(tok.encode(p)) <= budget for p in fitted)
    kept = {len(line.split()) - 1 for p in fitted for line in p.split("\n") if line.startswith("[1] word0")}
    assert len(kept) == 1 and 10 < kept.pop() < 200
    for unlimited in (prompts_sent(None, tok), prompts_sent(2048, None)):
        assert all("word199\n[2]" in p for p in unlimited)
