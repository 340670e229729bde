"""The package's shape (docs/DESIGN.md §2): no import cycle among the modules of
``vsml/``, and no module longer than a newcomer can read in one sitting."""

from __future__ import annotations

import ast
import graphlib
import importlib
import re
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "vsml"
MAX_LINES = 450
# Modules still over MAX_LINES, with the reason; the test fails when one shrinks below
# the limit (so the entry goes) or another grows past it.
LONG_MODULES: dict[str, str] = {}  # path -> why it may stay over the limit for now (none left)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Module -> the ``vsml`` modules it imports (anywhere in the file, function bodies included)."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from a.b import c` imports module a.b.c when there is one, else a name of a.b.
                targets = [
                    f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                    for alias in node.names
                ]
            else:
                continue
            graph[name] |= {target for target in targets if target in modules and target != name}
    return graph


def test_import_graph_reads_the_known_edges():
    graph = _import_graph()  # the test below is only as good as this graph: check it on known imports
    assert "vsml.meta" in graph["vsml.experiment"]  # from vsml.meta import MetaState, ...
    assert "vsml.learners.vsml_layer" in graph["vsml.learners.vsml"]  # from vsml.learners.vsml_layer import ...
    assert "vsml.learners.vsml_reference" in graph["vsml.learners.vsml"]  # from vsml.learners import vsml_reference


DIAGRAM_ARROW = "──>"


def _design_import_arrows() -> list[tuple[str, str]]:
    """The arrows of DESIGN §2's import diagram as (importer, imported) module names.

    A line ``a, b ──> c ──> d, e`` is the arrows a→c, b→c, c→d, c→e; ``meta/base`` is
    ``vsml.meta.base``, ``learners (registry)`` the package ``vsml.learners``; ``launch.py``
    and ``every layer`` are outside the package.
    """
    text = DESIGN.read_text()
    start = text.index("Who may import whom")
    block = text[start : text.index("The rules behind the arrows", start)]
    lines = [line.strip() for line in block.splitlines() if DIAGRAM_ARROW in line]

    def modules(part: str) -> list[str]:
        names = [re.sub(r"\(.*?\)", "", name).strip() for name in re.sub(r"\s{2,}\(.*", "", part).split(",")]
        return ["vsml." + name.replace("/", ".") for name in names if name and name not in ("launch.py", "every layer")]

    arrows = []
    for line in lines:
        stages = [modules(part) for part in line.split(DIAGRAM_ARROW)]
        arrows += [(a, b) for left, right in zip(stages, stages[1:]) for a in left for b in right]
    return arrows


def test_design_import_diagram_draws_only_real_imports():
    graph, arrows = _import_graph(), _design_import_arrows()
    assert len(arrows) >= 20, arrows  # the diagram was read
    missing = [f"{a} ──> {b}" for a, b in arrows if a not in graph or b not in graph[a]]
    assert not missing, "docs/DESIGN.md §2 draws imports the code does not have:\n" + "\n".join(missing)


def test_no_import_cycle_in_the_package():
    try:
        graphlib.TopologicalSorter(_import_graph()).prepare()
    except graphlib.CycleError as err:
        raise AssertionError(f"import cycle: {' -> '.join(err.args[1])}") from None


def test_no_module_over_the_line_limit():
    lengths = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines()) for path in sorted(PACKAGE.rglob("*.py"))
    }
    over = {path for path, lines in lengths.items() if lines > MAX_LINES}
    assert over == set(LONG_MODULES), {path: lengths[path] for path in over ^ set(LONG_MODULES)}


# --------------------------------------------------------------------------- DESIGN.md names what exists

DESIGN = ROOT / "docs" / "DESIGN.md"
CODE_SPAN = re.compile(r"`([^`\n]+)`")
REPO_PATH = re.compile(r"^(?:vsml|bench|tests|configs|docs|slurm|ssh)/[\w./-]*$")
FILE_NAME = re.compile(r"\.(py|md|yaml|chkp|npz|csv|jsonl|json|txt|log)$")
INSTALLED_ONLY = {"vsml/configs"}  # where a wheel puts configs/ (pyproject.toml package-dir), not in a checkout
DOTTED_NAME = re.compile(r"^((?:vsml\.)?[a-z_]+(?:\.[a-z_]+)*)\.([A-Za-z_]\w*)(?:\(\))?$")


def _short_module_names() -> dict[str, set[str]]:
    """``es`` -> {``vsml.meta.es``}: how DESIGN names modules (by their last component, or in full)."""
    names: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        full = _module_name(path)
        for short in {full, full.split(".")[-1], full.removeprefix("vsml.")}:
            names.setdefault(short, set()).add(full)
    return names


def _config_keys() -> set[str]:
    from vsml.settings import RunSettings  # noqa: PLC0415
    from vsml.settings.fields import leaves  # noqa: PLC0415

    keys = set()
    for leaf in leaves(RunSettings):
        parts = leaf.key.split(".")
        keys |= {".".join(parts[:end]) for end in range(1, len(parts) + 1)}
    return keys


def test_design_names_only_files_and_functions_that_exist():
    """A path or ``module.name`` in docs/DESIGN.md exists in the code (the prose must not drift from it)."""
    modules, keys = _short_module_names(), _config_keys()
    missing, checked = [], 0
    for span in sorted(set(CODE_SPAN.findall(DESIGN.read_text()))):
        if REPO_PATH.match(span) and not any(c.isupper() for c in span.replace("RESULTS", "").replace("DESIGN", "")):
            if not (ROOT / span.rstrip("/")).exists() and span not in INSTALLED_ONLY:
                missing.append(span)
            continue
        match = None if FILE_NAME.search(span) else DOTTED_NAME.match(span)
        if not match or span.removesuffix("()") in keys or match.group(1) not in modules:
            continue  # not a name of this package (a config key, a file name, another library's name)
        module_names, attribute = modules[match.group(1)], match.group(2)
        checked += 1
        if not any(hasattr(importlib.import_module(name), attribute) for name in module_names):
            missing.append(span)
    assert not missing, f"docs/DESIGN.md names what the code does not have: {missing}"
    assert checked >= 3  # the patterns still find the names DESIGN writes as module.function
