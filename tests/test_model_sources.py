"""Every loader takes what users name a model by: a folder, a storage URI, a Hugging Face Hub id.

The Hub ids are served offline from a Hugging Face cache folder built here from tiny models
(``HF_HOME/hub/models--org--name/snapshots/<rev>/`` + ``refs/main``, the layout huggingface_hub
writes), in a fresh Python with ``HF_HOME`` and ``HF_HUB_OFFLINE=1`` set, as a user's job has them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from model_fixtures import PASSAGES, QUERY, minilm_path, tiny_backbone, tokenizer

REPO = Path(__file__).resolve().parents[1]
REVISION = "0123456789abcdef0123456789abcdef01234567"
BACKBONE_ID = "rankdistill-test/tiny-bert"
CROSS_ENCODER_ID = "cross-encoder/ms-marco-TinyBERT-test"
MONO_STUDENT_ID = "rankdistill-test/tiny-mono-student"


def _hub_cache(home: Path, repo_id: str, build) -> Path:
    """``build(folder)`` saved as the cached snapshot of ``repo_id`` under ``home`` (HF_HOME)."""
    storage = home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = storage / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    build(snapshot)
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text(REVISION)
    return snapshot


def _save_encoder(folder: Path) -> None:
    tiny_backbone("bert", head=False, seed=1).save_pretrained(folder)
    tokenizer().save_pretrained(folder)


def _save_cross_encoder(folder: Path) -> None:
    tiny_backbone("bert", head=True, seed=2).save_pretrained(folder)
    tokenizer().save_pretrained(folder)


def _save_mono_student(folder: Path) -> None:
    from rankdistill.models import build_reranker

    torch.manual_seed(3)
    build_reranker("mono", minilm_path()).save_pretrained(folder)


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory) -> dict[str, Path]:
    home = tmp_path_factory.mktemp("hf-home")
    return {
        BACKBONE_ID: _hub_cache(home, BACKBONE_ID, _save_encoder),
        CROSS_ENCODER_ID: _hub_cache(home, CROSS_ENCODER_ID, _save_cross_encoder),
        MONO_STUDENT_ID: _hub_cache(home, MONO_STUDENT_ID, _save_mono_student),
        "home": home,
    }


# what a user's process does with each id; prints one JSON object
_BY_ID = r"""
import json, sys, torch
from rankdistill.errors import ConfigError
from rankdistill.models import build_reranker, load_reranker
from rankdistill.teachers.backends.base import BackendConfig
from rankdistill.teachers.backends.reranker import RerankerBackend
from rankdistill.tracking.models import load_reranker_from
from rankdistill.training.factories import StudentConfig, StudentFactory, check_student

backbone, cross, student, query, passages = sys.argv[1:6]
passages = json.loads(passages)
out = {}
check_student(StudentConfig(architecture="mono", backbone=backbone))
check_student(StudentConfig(architecture="mono", init_from=student))
torch.manual_seed(0)
out["backbone_factory"] = StudentFactory(StudentConfig(architecture="celi", backbone=backbone))().score(query, passages)
torch.manual_seed(0)
out["backbone_build"] = build_reranker("celi", backbone).score(query, passages)
out["init_from"] = StudentFactory(StudentConfig(architecture="mono", init_from=student))().score(query, passages)
out["load_reranker"] = load_reranker(cross).score(query, passages)
out["serve"] = load_reranker_from(cross).score(query, passages)
teacher = RerankerBackend(BackendConfig(name="reranker", model=cross, device="cpu"))
out["teacher"] = [row["yes"] for row in teacher.judge_points([(query, p) for p in passages], "yes", "no")]
for key, call in (("missing_backbone", lambda: check_student(StudentConfig(backbone="nobody/no-such-model"))),
                  ("missing_load", lambda: load_reranker("nobody/no-such-model"))):
    try:
        call()
        out[key] = None
    except ConfigError as exc:
        out[key] = str(exc)
print("RESULT " + json.dumps(out))
"""


def _user_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(HF_HOME=str(home), HF_HUB_OFFLINE="1", PYTHONPATH=f"{REPO / 'platform'}{os.pathsep}{REPO / 'tests'}",
               TOKENIZERS_PARALLELISM="false")
    return env


def test_every_loader_takes_hub_ids_from_the_offline_cache(hf_home, tmp_path):
    from rankdistill.models import build_reranker, load_reranker

    done = subprocess.run([sys.executable, "-c", _BY_ID, BACKBONE_ID, CROSS_ENCODER_ID, MONO_STUDENT_ID, QUERY,
                           json.dumps(PASSAGES)], env=_user_env(hf_home["home"]), cwd=tmp_path,
                          check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])

    # the same models loaded from their folders (here: the snapshot folders) score the same
    torch.manual_seed(0)
    by_folder = build_reranker("celi", str(hf_home[BACKBONE_ID])).score(QUERY, PASSAGES)
    for key in ("backbone_factory", "backbone_build"):
        assert out[key] == pytest.approx(by_folder, abs=1e-5), key
    assert out["init_from"] == pytest.approx(load_reranker(hf_home[MONO_STUDENT_ID]).score(QUERY, PASSAGES), abs=1e-5)
    cross = load_reranker(hf_home[CROSS_ENCODER_ID]).score(QUERY, PASSAGES)
    assert out["load_reranker"] == pytest.approx(cross, abs=1e-5)
    assert out["serve"] == pytest.approx(cross, abs=1e-5)
    # the pointwise teacher's "yes" is log sigmoid of the cross-encoder's logit
    assert out["teacher"] == pytest.approx([float(torch.nn.functional.logsigmoid(torch.tensor(s))) for s in cross],
                                           abs=1e-5)
    # a missing id without the Hub: one line naming the id and saying the Hub is offline
    for key in ("missing_backbone", "missing_load"):
        message = out[key]
        assert message and "\n" not in message, key
        assert "'nobody/no-such-model'" in message and "offline" in message, message


def test_hub_id_shape():
    from rankdistill.model_source import is_hub_id

    assert is_hub_id("cross-encoder/ms-marco-MiniLM-L-6-v2")
    assert is_hub_id("gpt2")
    assert not is_hub_id("s3://bucket/model")
    assert not is_hub_id("outputs/train/model")  # two slashes: a path
    assert not is_hub_id("org/name--x") and not is_hub_id("../model") and not is_hub_id("/abs/model")


def test_uri_backbone_and_teacher_are_copied_once_per_node(tmp_path, monkeypatch):
    """A ``file://`` URI stands for ``s3://``: the student config accepts the URI backbone before
    any work starts (the GPU config's ColBERT backbone), and the hf teacher backend and the reranker
    backend load URI models through one per-node cache copy, re-copied when the source changes."""
    from rankdistill.model_source import model_cache_root, node_cache_folder
    from rankdistill.teachers.backends.base import BackendConfig
    from rankdistill.teachers.backends.hf import HFBackend
    from rankdistill.teachers.backends.reranker import RerankerBackend
    from rankdistill.training.factories import StudentConfig, backbone_path, check_student
    from teacher_fixtures import tiny_seq2seq_lm

    monkeypatch.setenv("RANKDISTILL_MODEL_CACHE", str(tmp_path / "cache"))
    encoder = tmp_path / "store" / "encoder"
    _save_encoder(encoder)
    uri = encoder.as_uri()
    assert backbone_path("s3://rankdistill-models/colbertv2.0") == "s3://rankdistill-models/colbertv2.0"
    check_student(StudentConfig(architecture="colbert", backbone=uri))

    t5 = tiny_seq2seq_lm(tmp_path / "store" / "t5")
    prompts = ["Query: cats Document0: a cat Document1: a dog Relevant:"]
    by_uri = HFBackend(BackendConfig(model=t5.as_uri(), model_type="seq2seq", device="cpu"))
    by_folder = HFBackend(BackendConfig(model=str(t5), model_type="seq2seq", device="cpu"))
    assert by_uri.token_logprobs(prompts, ["true", "false"])[0] == pytest.approx(
        by_folder.token_logprobs(prompts, ["true", "false"])[0])
    assert Path(by_uri.model_id).parent == model_cache_root()

    cross = tmp_path / "store" / "cross"
    _save_cross_encoder(cross)
    teacher = RerankerBackend(BackendConfig(name="reranker", model=cross.as_uri(), device="cpu"))
    assert teacher.judge_points([(QUERY, PASSAGES[0])], "yes", "no")[0]["yes"] < 0

    copy = node_cache_folder(cross.as_uri())
    stamp = (copy / "config.json").stat().st_mtime_ns
    assert node_cache_folder(cross.as_uri()) == copy and (copy / "config.json").stat().st_mtime_ns == stamp
    config = json.loads((cross / "config.json").read_text())
    config["rankdistill_note"] = "changed"
    (cross / "config.json").write_text(json.dumps(config))
    assert json.loads((node_cache_folder(cross.as_uri()) / "config.json").read_text())["rankdistill_note"] == "changed"
    shutil.rmtree(copy)
