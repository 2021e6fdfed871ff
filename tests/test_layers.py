"""Imports flow downward: jobs → workflows → training / evaluation → teachers / retrieval /
tracking / serving → data / models / losses → shared utilities. A module may import its own
package and any lower layer, never a higher or sibling one; tests import no factory from
``workflows``."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIBRARY = REPO / "platform" / "rankdistill"

# package -> layer (higher imports lower)
LAYERS = {
    "workflows": 4,
    "training": 3, "evaluation": 3, "serving": 3,
    "teachers": 2, "retrieval": 2, "tracking": 2,
    "data": 1, "models": 1, "losses": 1,
    # shared utilities, ordered among themselves
    "cli": 0.4, "config": 0.3, "ray_runtime": 0.2, "model_source": 0.15, "storage": 0.1, "interrupt": 0.05, "precision": 0.03,
    "errors": 0,
}


def rankdistill_imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every ``rankdistill.*`` import in a file, lazy ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rankdistill."):
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names if a.name.startswith("rankdistill."))
    return out


def package_of(module: str) -> str:
    return module.split(".")[1]


def test_every_package_has_a_layer():
    packages = {p.stem if p.is_file() else p.name for p in LIBRARY.iterdir()
                if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists())) and p.stem != "__init__"}
    assert packages <= set(LAYERS), f"give these a layer: {packages - set(LAYERS)}"


def test_imports_flow_downward():
    violations = []
    for path in LIBRARY.rglob("*.py"):
        rel = path.relative_to(LIBRARY)
        own = rel.parts[0].removesuffix(".py") if rel.parts[0] != "__init__.py" else None
        if own is None:
            continue
        for line, module in rankdistill_imports(path):
            target = package_of(module)
            if target == own:
                continue
            if LAYERS[target] >= LAYERS[own]:
                violations.append(f"{rel}:{line} ({own}, layer {LAYERS[own]}) imports {module} (layer {LAYERS[target]})")
    assert not violations, "\n".join(violations)


def test_tests_and_benchmarks_take_factories_from_training():
    offenders = []
    for path in [*(REPO / "tests").rglob("*.py"), *(REPO / "benchmarks").glob("*.py")]:
        for line, module in rankdistill_imports(path):
            if module.startswith("rankdistill.workflows"):
                text = path.read_text(encoding="utf-8").splitlines()[line - 1]
                if any(name in text for name in ("Factory", "build_examples", "training_rows", "extra_fields")):
                    offenders.append(f"{path.relative_to(REPO)}:{line}: {text.strip()}")
    assert not offenders, "\n".join(offenders)


def test_the_layer_check_sees_a_violation(tmp_path):
    """The checker itself: an upward import in a data module is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from rankdistill.workflows.evaluate import run_evaluate\n", encoding="utf-8")
    assert rankdistill_imports(bad) == [(2, "rankdistill.workflows.evaluate")]
    assert LAYERS[package_of("rankdistill.workflows.evaluate")] > LAYERS["data"]
