"""dvc.yaml lists exactly the project modules each stage runs, so changing one re-runs what it should."""

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
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == PACKAGE}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == PACKAGE:
            found.add(node.module)
            # `from skin_cancer import audit` imports a module; `from skin_cancer.x import f` a name.
            found |= {f"{node.module}.{alias.name}" for alias in node.names if module_file(f"{node.module}.{alias.name}")}
    # The bare package's __init__ only re-exports lazily; it is not a dependency of its own.
    return {name for name in found if name != PACKAGE and module_file(name)}


def import_closure(module: str) -> set[str]:
    """Every project module that running `module` may import, as paths relative to the project root."""
    seen, todo = set(), [module]
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
