"""The project's import graph: it runs one way (no cycle), and dvc.yaml lists exactly the project
modules each stage runs, so changing one re-runs what it should."""

import ast
from pathlib import Path

import yaml

from tests.helpers import ROOT

SRC = ROOT / "src"
PACKAGE = "skin_cancer"


def module_file(name: str) -> Path | None:
    """The source file of a project module (a package's __init__.py), or None if `name` is not one."""
    base = SRC / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Project modules a file imports anywhere in it (function-level imports too: they run)."""
    found, tree = set(), ast.parse(path.read_text())
    # A module's __getattr__ imports lazily, on an attribute no stage asks for (skin_cancer.load_classifier).
    tree.body = [node for node in tree.body if not (isinstance(node, ast.FunctionDef) and node.name == "__getattr__")]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == PACKAGE}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == PACKAGE:
            found.add(node.module)
            # `from skin_cancer import audit` imports a module; `from skin_cancer.x import f` a name.
            found |= {f"{node.module}.{alias.name}" for alias in node.names if module_file(f"{node.module}.{alias.name}")}
    return {name for name in found if module_file(name)}


def import_closure(module: str) -> set[str]:
    """Every project module that running `module` may import, as paths relative to the project root."""
    # Python runs the package's __init__ before any of its modules; it caps the numerical kernels
    # (skin_cancer.host.pin), so it and what it imports change every stage's numbers.
    seen, todo = set(), [module, PACKAGE]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += imported_modules(module_file(name))
    return {str(module_file(name).relative_to(ROOT)) for name in seen}


def stage_module(cmd: str) -> str:
    prefix = "python -m "
    assert cmd.startswith(prefix), f"stage command {cmd!r} is not `python -m <module>`"
    return cmd[len(prefix) :].split()[0]


def test_every_stage_lists_exactly_the_modules_it_imports():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    problems = []
    for name, stage in stages.items():
        needed = import_closure(stage_module(stage["cmd"]))
        listed = {dep for dep in stage["deps"] if dep.startswith("src/")}
        if needed - listed:
            problems.append(f"{name}: missing {sorted(needed - listed)}")
        if listed - needed:
            problems.append(f"{name}: lists {sorted(listed - needed)} it does not import")
    assert not problems, "\n".join(problems)


def test_the_closure_follows_function_level_and_package_imports(tmp_path):
    closure = import_closure("skin_cancer.stages.track")
    assert "src/skin_cancer/stages/__init__.py" in closure  # run_stage
    assert "src/skin_cancer/config.py" in closure
    assert "src/skin_cancer/tracking.py" in closure
    assert {"src/skin_cancer/__init__.py", "src/skin_cancer/host.py"} <= closure  # the package's kernel caps


def test_the_project_modules_import_one_way():
    """No module imports (at the top or inside a function) one that imports it back, however
    indirectly: graphlib names the cycle."""
    import graphlib

    files = (SRC / PACKAGE).rglob("*.py")
    names = [".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__") for path in files]
    graph = {name: imported_modules(module_file(name)) - {name} for name in names}
    assert len(graph) > 30 and sum(map(len, graph.values())) > 100  # the whole package was read
    graphlib.TopologicalSorter(graph).prepare()
