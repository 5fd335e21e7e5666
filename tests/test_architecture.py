"""The layering rules the code promises: no import cycle (function-level imports included),
`bench` and `export` never import `compress`, and no function too long to read at once."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import FAST_BENCH

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("compress", "bench", "export", "recipes")
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _project_files() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def _imported(node: ast.AST, module: str, modules: set[str]) -> set[str]:
    """Project modules one import statement loads, its parent packages included."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            anchor = module.split(".")[: -node.level]
            base = ".".join(anchor + ([base] if base else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    else:
        return set()
    found = set()
    for name in names:
        parts = name.split(".")
        found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & modules
    return found


def import_graph() -> dict[str, set[str]]:
    files = _project_files()
    modules = set(files)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            edges |= _imported(node, module, modules)
        graph[module] = edges - {module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path of module names, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_walker_finds_a_cycle_when_there_is_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_project_imports_have_no_cycle():
    graph = import_graph()
    assert (
        "compress.training.loop" in graph
        and "compress.engine.catalog" in graph["compress.engine.recipe"]
    )
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_bench_and_export_never_import_compress():
    for module, edges in import_graph().items():
        if module.split(".")[0] in ("bench", "export"):
            assert not [e for e in edges if e.split(".")[0] == "compress"], module


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_serving_imports_no_training_code():
    """The deployment runtime (predict, serve, monitor, explain) reaches no training loop,
    modifier, stage, recipe engine or data loader, not even through another module."""
    graph = import_graph()
    training = ("compress.training", "compress.modifiers", "compress.stages", "compress.engine")
    training += ("compress.data",)
    serving = [m for m in graph if m.startswith("compress.serving.")]
    assert len(serving) >= 8
    for module in serving:
        reached = _reachable(graph, module)
        assert not [m for m in reached if m.startswith(training)], module


def test_compress_top_level_is_small():
    top = sorted(p.name for p in (ROOT / "compress").glob("*.py"))
    assert len(top) <= 8, top


def test_no_function_is_longer_than_80_lines():
    long = []
    for module, path in _project_files().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{module}.{node.name}: {lines} lines")
    assert not long, long


def test_predict_and_serve_on_an_onnx_file_load_neither_torch_nor_scikit_learn(tiny_onnx):
    """`edgebert predict|serve model.onnx` must start on an edge board: ORT and a tokenizer."""
    import json
    import subprocess
    import sys

    onnx_path = tiny_onnx
    probe = (
        "import sys\n"
        "from compress.cli import main\n"
        f"sys.argv = ['edgebert', 'predict', {str(onnx_path)!r}, 'a fine film']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "from pathlib import Path\nfrom compress.serving.serve import create_app\n"
        f"create_app(Path({str(onnx_path)!r}))\n"
        "print(sorted(m for m in ('torch', 'sklearn', 'transformers', 'compress.data.splits') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr
    prediction, loaded = done.stdout.strip().splitlines()
    assert json.loads(prediction)["label"] in ("negative", "positive")
    assert loaded == "[]"


BLOCKER = """
import runpy, sys

class Unimportable:
    \"\"\"torch and compress are not there: what an edge board without the toolkit has.\"\"\"

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "compress"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None

sys.meta_path.insert(0, Unimportable())
sys.argv = ["python -m bench", *sys.argv[1:]]
runpy.run_module("bench", run_name="__main__")
"""


def test_python_m_bench_runs_with_torch_and_compress_unimportable(tiny_onnx, tmp_path):
    import json
    import subprocess
    import sys

    onnx_path = tiny_onnx
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "".join(
            json.dumps({"text": t, "label": i % 2}) + "\n"
            for i, t in enumerate(["a fine film", "dull and slow", "great"] * 4)
        )
    )
    script = tmp_path / "blocked.py"
    script.write_text(BLOCKER)
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            f"tiny={onnx_path}",
            "--data",
            str(rows),
            *FAST_BENCH,
            "--traffic-batch",
            "4",
            "--out",
            str(tmp_path / "report"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["models"][0]["accuracy"]["n"] == 12 and report["models"][0]["latency"]


def _protocol_members(cls) -> set[str]:
    names = set(getattr(cls, "__annotations__", {}))
    names |= {n for n in vars(cls) if not n.startswith("_")}
    return names


def test_modifiers_use_only_the_typed_training_state():
    """Every `phase.X` a modifier (or a helper it hands the state to) reads is declared in
    `TrainingState`, and the loop provides every declared member."""
    from compress.modifiers.state import TrainingState
    from compress.training.loop import TrainingPhase

    declared = _protocol_members(TrainingState)
    files = [*(ROOT / "compress" / "modifiers").glob("*.py")]
    files += [ROOT / "compress" / "models" / "relations.py"]
    used: dict[str, set[str]] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "phase"
            ):
                used.setdefault(node.attr, set()).add(path.name)
    assert len(used) >= 20  # the walk sees the modifiers' reads
    undeclared = {name: files for name, files in used.items() if name not in declared}
    assert not undeclared, undeclared
    provided = _protocol_members(TrainingPhase) | set(TrainingPhase.__dataclass_fields__)
    loop_source = (ROOT / "compress" / "training" / "loop.py").read_text(encoding="utf-8")
    assigned = {n for n in declared if re.search(rf"self\.{n}\b[^=\n]*=", loop_source)}
    missing = [n for n in declared if n not in provided | assigned]
    assert not missing, missing
