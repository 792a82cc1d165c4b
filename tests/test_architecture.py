"""The layering of the package, read from the source (imports inside functions count).

Layers, lowest first; a module imports only modules of its own layer or lower ones:

0. foundations, free of torch: errors, scores, config
1. devices, files, data and models: distributed, device, artifacts, runlock, data.*, models.*
2. training: objectives, stepgraph, train
3. algorithms, pure tensor functions, and the method table: teacher.difficulty,
   teacher.score_files, distill.bn_matching, distill.folder, distill.synthesis,
   selection.ccfs, selection.baselines, selection.methods
4. the one assembly of the pipeline's pieces: api
5. the run directory and its records: records, context
6. stages, peers that never import one another: teacher.run, distill.run, selection.run,
   evaluate.run, export, report.* (run, tables, plots, results_page)
7. orchestration: pipeline, cli, __main__, the package

Also: no import cycles; loading a config imports no torch; an import inside a function says
why in a comment (on its line or the line before, or once per module in a line starting
`# function-level imports:`).
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
    "report": ("ccfs.report.run", "ccfs.report.tables", "ccfs.report.plots", "ccfs.report.results_page"),
}
ORCHESTRATORS = ("ccfs.cli", "ccfs.pipeline", "ccfs.__main__", "ccfs")  # may import anything

LAYERS = [
    ("ccfs.errors", "ccfs.scores", "ccfs.config"),
    ("ccfs.distributed", "ccfs.device", "ccfs.artifacts", "ccfs.runlock", "ccfs.data.*", "ccfs.models.*"),
    ("ccfs.objectives", "ccfs.stepgraph", "ccfs.train"),
    ("ccfs.teacher", "ccfs.teacher.difficulty", "ccfs.teacher.score_files", "ccfs.distill", "ccfs.distill.bn_matching",
     "ccfs.distill.folder", "ccfs.distill.synthesis", "ccfs.selection", "ccfs.selection.ccfs",
     "ccfs.selection.baselines", "ccfs.selection.methods", "ccfs.evaluate", "ccfs.report"),
    ("ccfs.api",),
    ("ccfs.records", "ccfs.context"),
    ("ccfs.teacher.run", "ccfs.distill.run", "ccfs.selection.run", "ccfs.evaluate.run", "ccfs.export",
     "ccfs.report.run", "ccfs.report.tables", "ccfs.report.plots", "ccfs.report.results_page"),
    ORCHESTRATORS,
]


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


def layer_of(module: str) -> int | None:
    for i, names in enumerate(LAYERS):
        for pattern in names:
            if module == pattern or (pattern.endswith(".*") and module.startswith(pattern[:-1])) \
                    or (pattern.endswith(".*") and module == pattern[:-2]):
                return i
    return None


def test_every_module_has_a_layer():
    missing = sorted(m for m in modules() if layer_of(m) is None)
    assert not missing, f"modules in no layer (add them to LAYERS and the docstring): {missing}"


def test_no_module_imports_a_higher_layer():
    bad = [(m, i) for m, deps in graph().items() for i in deps - {"ccfs"}  # `from ccfs import x` names module x
           if layer_of(m) is not None and layer_of(i) is not None and layer_of(i) > layer_of(m)]
    assert not bad, f"imports that climb to a higher layer: {bad}"


def test_checker_sees_a_planted_upward_import(monkeypatch):
    """The layer rule can fail: the method table importing the run directory is reported."""
    real = graph()
    planted = {**real, "ccfs.selection.methods": real["ccfs.selection.methods"] | {"ccfs.context"}}
    monkeypatch.setattr(sys.modules[__name__], "graph", lambda: planted)
    with pytest.raises(AssertionError, match="ccfs.context"):
        test_no_module_imports_a_higher_layer()


def unexplained_function_imports(source: str) -> list[int]:
    """Lines of imports inside functions with no comment giving a reason."""
    lines = source.splitlines()
    if any(line.startswith("# function-level imports:") for line in lines):
        return []
    found = []
    for fn in ast.walk(ast.parse(source)):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    line, before = lines[node.lineno - 1], lines[node.lineno - 2]
                    if "#" not in line and not before.strip().startswith("#"):
                        found.append(node.lineno)
    return sorted(set(found))


def test_imports_inside_functions_say_why():
    bad = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py") if (n := unexplained_function_imports(p.read_text()))}
    assert not bad, f"imports inside functions without a comment giving the reason: {bad}"


def test_function_import_checker_can_fail():
    assert unexplained_function_imports("def f():\n    import os\n") == [2]
    assert unexplained_function_imports("def f():\n    import os  # lazily: a reason\n") == []


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
