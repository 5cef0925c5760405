"""The project's import graph: it runs one way (no cycle; the packages in layers), dvc.yaml lists
exactly the project modules each stage runs (so changing one re-runs what it should), and
docs/architecture.md shows the graph as the code has it."""

import graphlib

import yaml

from scripts.architecture import ENTRY_POINTS, LAYERS, PACKAGE, imported_modules, layer, module_file, project_modules
from scripts.architecture import main as architecture
from tests.helpers import ROOT


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
        # Importing skin_cancer.data.images runs skin_cancer/data/__init__.py first.
        todo += [name.rsplit(".", depth)[0] for depth in range(1, name.count("."))]
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


def test_the_closure_follows_function_level_and_package_imports():
    closure = import_closure("skin_cancer.stages.track")
    assert "src/skin_cancer/stages/__init__.py" in closure  # run_stage
    assert "src/skin_cancer/config.py" in closure
    assert {"src/skin_cancer/tracking/__init__.py", "src/skin_cancer/tracking/runs.py"} <= closure
    assert {"src/skin_cancer/__init__.py", "src/skin_cancer/host.py"} <= closure  # the package's kernel caps


def test_the_project_modules_import_one_way():
    """No module imports (at the top or inside a function) one that imports it back, however
    indirectly: graphlib names the cycle."""
    graph = {name: imported_modules(module_file(name)) - {name} for name in project_modules()}
    assert len(graph) > 30 and sum(map(len, graph.values())) > 100  # the whole package was read
    graphlib.TopologicalSorter(graph).prepare()


def test_the_packages_import_in_layers():
    """core <- data <- models <- evaluation <- tracking <- serving: tracking stores the serving model
    without importing serving (the track stage hands it over), serving reads the registry."""
    names = project_modules()
    upward = [
        f"{name} ({layer(name)}) imports {imported} ({layer(imported)})"
        for name in names
        if not name.startswith(ENTRY_POINTS)
        for imported in sorted(imported_modules(module_file(name)))
        if LAYERS.index(layer(imported)) > LAYERS.index(layer(name))
    ]
    assert {layer(name) for name in names} == set(LAYERS)
    assert not upward, "\n".join(upward)


def test_only_entry_points_know_where_the_pipeline_writes():
    """Library code takes its folders and files as arguments: only the stages, the CLI and the app
    (and `paths` itself, with the core constants it builds on) import skin_cancer.paths."""
    knowing = {name for name in project_modules() if f"{PACKAGE}.paths" in imported_modules(module_file(name))}
    library = sorted(name for name in knowing if not name.startswith(ENTRY_POINTS))
    assert library == [], f"library modules that import skin_cancer.paths: {library}"
    assert "skin_cancer.stages.track" in knowing  # the rule reads the imports it should


def test_the_architecture_page_shows_the_code_as_it_is():
    assert architecture(["--check"]) == 0, "docs/architecture.md is out of date: run python scripts/architecture.py"


def test_each_packages_unit_tests_import_it_and_the_layers_below_only():
    """tests/unit/<package>/ tests that package: each file imports it, and otherwise only what the
    package itself may import; never a layer above it or an entry point (tests/unit/entry_points/
    tests those). Objects from elsewhere come through fixtures."""
    unit = ROOT / "tests" / "unit"
    folders = sorted(path.parent.name for path in unit.glob("*/test_*.py"))
    assert set(folders) == {*LAYERS, "entry_points"}, folders
    problems = []
    for package in LAYERS:
        for path in sorted((unit / package).glob("test_*.py")):
            imported = imported_modules(path)
            above = sorted(m for m in imported if m.startswith(ENTRY_POINTS) or LAYERS.index(layer(m)) > LAYERS.index(package))
            if above:
                problems.append(f"{path.relative_to(ROOT)} imports {above}")
            if not any(layer(m) == package for m in imported):
                problems.append(f"{path.relative_to(ROOT)} imports nothing of skin_cancer.{package}")
    assert not problems, "\n".join(problems)
