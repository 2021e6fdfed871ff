"""One-off check: our listwise templates against rank_llm 0.26.0 on every recorded DL19 window.

    /work/side-venvs/rankllm/bin/python scripts/make_rankllm_fixtures.py --all /tmp/rankllm-dl19-all.json
    PYTHONPATH=platform .venv/bin/python scripts/compare_rankllm_prompts.py /tmp/rankllm-dl19-all.json

Prints one line per template: windows whose messages are byte-identical to rank_llm's, and the
2023 RankVicuna template against the 387 recorded prompts. Exits non-zero on any difference.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rankdistill.data.beir import read_corpus, read_queries
from rankdistill.teachers.prompts import load_template

DATA = "/work/shared/data/trec-dl-2019-passage"
OURS = {"rankzephyr": "rankzephyr", "rankvicuna": "rankvicuna-rankllm", "rankgpt": "rankgpt"}


def main(path: str, data: str = DATA) -> int:
    corpus, queries = read_corpus(f"{data}/corpus.jsonl"), read_queries(f"{data}/queries.jsonl")
    theirs = json.loads(Path(path).read_text(encoding="utf-8"))
    failed = 0
    for name, ours in OURS.items():
        template = load_template(ours)
        differ = [(w["qid"], w["window"]) for w in theirs["windows"]
                  if template.listwise_messages(queries[w["qid"]].text, [corpus[d].contents for d in w["docids"]])
                  != w["messages"][name]]
        n = len(theirs["windows"])
        print(f"{name}: ours ({ours}) = rank_llm {theirs['rank_llm']} messages on {n - len(differ)}/{n} windows"
              + (f"; first differences {differ[:5]}" if differ else ""))
        failed += len(differ)
    template = load_template("rankvicuna")
    windows = Path(data) / "teacher" / "rankvicuna-7b.bm25.windows.jsonl"
    records = [json.loads(line) for line in windows.read_text(encoding="utf-8").splitlines()]
    same = sum(template.listwise(queries[r["qid"]].text, [corpus[d].contents for d in r["docids"]]) == r["prompt"]
               for r in records)
    print(f"rankvicuna (2023, rank_llm 0.0.5 / FastChat) = recorded prompts on {same}/{len(records)} windows")
    failed += len(records) - same
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
