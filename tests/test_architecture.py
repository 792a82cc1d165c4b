"""The layering of the package, read from the source (imports inside functions count):

- a stage (the module that reads and writes one step's artifacts) imports no other stage;
- the shared layer (config, data, models, train, methods, records, artifacts, the
  algorithms, the Python API that stages build on) imports no stage, so a config reaches
  every stage from the pipeline without climbing back through another one;
- no import cycles between ccfs modules;
- loading a config imports no torch.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ccfs"

STAGES = {
    "teacher": ("ccfs.teacher.run",),
    "distill": ("ccfs.distill.run",),
    "select": ("ccfs.selection.run",),
    "evaluate": ("ccfs.evaluate.run",),
    "export": ("ccfs.export",),
    "report": ("ccfs.report.run", "ccfs.report.tables", "ccfs.report.plots"),
}
ORCHESTRATORS = ("ccfs.cli", "ccfs.pipeline", "ccfs.__main__", "ccfs")  # may import anything


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(path: Path, known: set[str]) -> set[str]:
    """ccfs modules imported anywhere in the file (`from ccfs.x import y` counts ccfs.x.y
    when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m in known}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(path, set(mods)) - {name} for name, path in mods.items()}


def stage_of(module: str) -> str | None:
    return next((s for s, mods in STAGES.items() if module in mods), None)


def test_stage_modules_exist():
    mods = modules()
    for stage, names in STAGES.items():
        for name in names:
            assert name in mods, f"stage {stage}: module {name} is gone; update STAGES"


def test_no_stage_imports_another_stage():
    bad = [(m, i) for m, deps in graph().items() for i in deps
           if stage_of(m) and stage_of(i) and stage_of(i) != stage_of(m)]
    assert not bad, f"stage modules importing other stages: {bad}"


def test_shared_layer_imports_no_stage():
    bad = [(m, i) for m, deps in graph().items() for i in deps
           if not stage_of(m) and m not in ORCHESTRATORS and stage_of(i)]
    assert not bad, f"shared modules importing stage modules: {bad}"


def test_no_import_cycles():
    g = graph()
    # the package __init__ files re-export their modules; a module importing its own package
    # is not a cycle worth reporting
    g = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in g.items()}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(d):] + [d]))
            if d not in state:
                visit(d)
        path.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)


def test_checker_sees_a_planted_cross_stage_import(monkeypatch):
    """The rule above can fail: a stage importing another is reported."""
    real = graph()
    planted = {**real, "ccfs.export": real["ccfs.export"] | {"ccfs.evaluate.run"}}
    monkeypatch.setattr(sys.modules[__name__], "graph", lambda: planted)
    with pytest.raises(AssertionError, match="ccfs.evaluate.run"):
        test_no_stage_imports_another_stage()


def test_checker_sees_a_planted_api_to_stage_import(monkeypatch):
    """`ccfs.api` is shared (stages import it): an import of a stage from it is reported."""
    real = graph()
    planted = {**real, "ccfs.api": real["ccfs.api"] | {"ccfs.selection.run"}}
    monkeypatch.setattr(sys.modules[__name__], "graph", lambda: planted)
    with pytest.raises(AssertionError, match="ccfs.selection.run"):
        test_shared_layer_imports_no_stage()


def test_loading_every_preset_imports_no_torch():
    code = ("import sys, glob\nfrom ccfs.config import load_config\n"
            "[load_config(p) for p in glob.glob('configs/*.yaml')]\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
