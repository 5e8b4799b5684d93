"""The layers point down: hardware -> models -> compiler -> simulator -> viz -> command line.

The contract itself lives in pyproject.toml ([tool.importlinter]); `make test` runs
lint-imports before pytest, and this test runs it too so a back-arrow shows among the tests.
"""
import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAYERS = ("hardware", "models", "compiler", "simulator", "viz", "ipusim_cli")


def test_import_contracts_are_kept():
    exe = pathlib.Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        pytest.skip("import-linter is not installed in this environment")
    r = subprocess.run([str(exe)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:]


def _project_imports_inside_functions():
    for path in sorted(ROOT.glob("*/**/*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] not in LAYERS:
            continue
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom):
                    top = (node.module or "").split(".")[0]
                    if node.level or top in LAYERS:
                        yield f"{rel}:{node.lineno}: {ast.unparse(node)}"
                elif isinstance(node, ast.Import) and any(a.name.split(".")[0] in LAYERS for a in node.names):
                    yield f"{rel}:{node.lineno}: {ast.unparse(node)}"


#: imports that must stay inside a function, each with its reason
DEFERRED = {
    "compiler/checks.py": "graph.py calls the checks and the checks raise graph.GraphError: a module cycle",
    "compiler/graph.py": "the same cycle, from the graph's side",
}


def test_project_imports_sit_at_the_top_of_their_module():
    """An import inside a function hides a dependency from the import graph (and from the contracts)."""
    hidden = [line for line in _project_imports_inside_functions() if line.split(":")[0] not in DEFERRED]
    assert not hidden, "\n".join(hidden)
