"""Regenerate the generated parts of docs/architecture.md from the code: the package graph (from
every import in src/skin_cancer, function-level ones too), each package's modules (from their
docstrings) and the stage graph (`dvc dag --mermaid`).

    python scripts/architecture.py           # rewrite the generated blocks
    python scripts/architecture.py --check   # exit 1 if they differ from the code (a test runs this)
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = "skin_cancer"
DOC = ROOT / "docs" / "architecture.md"
# Each package may import the ones before it; the entry points (the CLI, the stages, the app) anything.
LAYERS = ("core", "data", "models", "evaluation", "tracking", "serving")
ENTRY_POINTS = ("skin_cancer.cli", "skin_cancer.stages", "skin_cancer.serving.app")


def module_file(name: str) -> Path | None:
    """The source file of a project module (a package's __init__.py), or None if `name` is not one."""
    base = SRC / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def project_modules() -> list[str]:
    """Every module of the package, dotted, sorted."""
    files = (SRC / PACKAGE).rglob("*.py")
    return sorted(".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__") for path in files)


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


def layer(module: str) -> str:
    """The package of a project module; top-level modules (config, io, host, paths, ...) are core."""
    part = module.split(".")[1] if "." in module else "core"
    return part if part in LAYERS else "core"


def group(module: str) -> str:
    """The box a module is drawn in: its layer, or the entry point it is."""
    if module.startswith("skin_cancer.stages"):
        return "stages"
    if module in ("skin_cancer.cli", "skin_cancer.serving.app"):
        return module.split(".")[-1]
    return layer(module)


def package_graph() -> str:
    """A mermaid flowchart of the packages: an arrow per pair that imports, labelled with how many
    imports (module to module) it stands for."""
    counts: dict[tuple[str, str], int] = {}
    for name in project_modules():
        for imported in imported_modules(module_file(name)):
            pair = (group(name), group(imported))
            if pair[0] != pair[1]:
                counts[pair] = counts.get(pair, 0) + 1
    lines = ["```mermaid", "flowchart TD"]
    lines += [f"  {a} -->|{n}| {b}" for (a, b), n in sorted(counts.items())]
    return "\n".join([*lines, "```"])


def first_line(path: Path) -> str:
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    return " ".join(docstring.split("\n\n")[0].split())


def module_table() -> str:
    """Each module with the first paragraph of its docstring."""
    rows = ["| module | what it is |", "| --- | --- |"]
    for name in project_modules():
        rows.append(f"| `{name.removeprefix(PACKAGE + '.') or PACKAGE}` | {first_line(module_file(name))} |")
    return "\n".join(rows)


def stage_graph() -> str:
    """`dvc dag --mermaid` of the pipeline."""
    dag = subprocess.run([sys.executable, "-m", "dvc", "dag", "--mermaid"], cwd=ROOT, capture_output=True, text=True, check=True)
    dag = dag.stdout
    return "```mermaid\n" + dag.strip().replace("\t", "  ") + "\n```"


BLOCKS = {"packages": package_graph, "modules": module_table, "stages": stage_graph}


def render(text: str) -> str:
    """`text` with every generated block (between `<!-- generated: NAME -->` and `<!-- end -->`) redone."""
    for name, make in BLOCKS.items():
        pattern = re.compile(rf"(<!-- generated: {name} -->\n).*?(<!-- end -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"{DOC}: no block `<!-- generated: {name} -->` ... `<!-- end -->`")
        block = make()
        text = pattern.sub(lambda m, block=block: m.group(1) + block + "\n" + m.group(2), text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if docs/architecture.md is out of date")
    args = parser.parse_args(argv)
    old = DOC.read_text()
    new = render(old)
    if args.check:
        if new != old:
            print(f"{DOC} is out of date: run python scripts/architecture.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
