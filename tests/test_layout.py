"""The package's layout: imports point one way, the core loads no framework, the top stays small.

The import graph is read from the source with ``ast`` (nothing is imported), function-local imports
included, as ``shared/tools/import_graph.py`` reads it. An edge goes to the module an import names:

- ``import p.q.m`` and ``from p.q import m`` (``m`` a submodule): to ``p.q.m`` only;
- ``from p.q import name`` (``name`` defined in ``p/q/__init__.py``, not a submodule): to the
  package ``p.q`` itself, its ``__init__``: a real dependency on the facade;
- the parent packages Python runs on the way (``p``, ``p.q``) are no edges: counting them would put
  every facade that re-exports its submodules into a cycle with each of them.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import xattn

PACKAGE_DIR = Path(xattn.__file__).resolve().parent
#: Modules that import a framework at module level; they load only through the backend registry.
FRAMEWORK_MODULES = (
    "xattn.__main__",
    "xattn.backends.jax_attention",
    "xattn.backends.torch_attention",
    "xattn.layers.equinox_layer",
    "xattn.layers.flax_layer",
    "xattn.layers.torch_layer",
)
FRAMEWORKS = ("jax", "jaxlib", "flax", "equinox", "torch")
#: Files (``__init__.py`` included) that may sit directly in ``xattn/``, the entry packages counted
#: among them: everything else goes into a part.
MOST_TOP_LEVEL_MODULES = 12


# ------------------------------------------------------------------------------- the import graph


def module_files(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package (a package is its ``__init__``)."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def import_graph(package_dir: Path) -> dict[str, dict[str, int]]:
    """Module -> {module it imports: line of the first such import}, within the package only."""
    modules = module_files(package_dir)
    package = package_dir.name

    def known(name: str) -> str | None:
        """The longest prefix of a dotted name that is a module of the package."""
        parts = name.split(".")
        for end in range(len(parts), 0, -1):
            if ".".join(parts[:end]) in modules:
                return ".".join(parts[:end])
        return None

    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        here = module.split(".") if is_package else module.split(".")[:-1]
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [known(alias.name) for alias in node.names if alias.name.split(".")[0] == package]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[: len(here) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if source.split(".")[0] != package:
                    continue
                for alias in node.names:
                    submodule = f"{source}.{alias.name}"
                    targets.append(submodule if submodule in modules else known(source))
            for target in targets:
                if target is not None and target != module:
                    edges.setdefault(target, node.lineno)
        graph[module] = edges
    return graph


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The components of more than one module (Tarjan), each sorted; a cycle lies inside each."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in graph.get(module, {}):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(components)


def shortest_loop(graph: dict[str, dict[str, int]], component: list[str]) -> list[str]:
    """One shortest import loop through the component's first module, as [a, b, ..., a]."""
    start, members = component[0], set(component)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for module in frontier:
            for target in sorted(graph[module]):
                if target not in members or target in came_from:
                    continue
                came_from[target] = module
                if target == start:
                    loop = [start]
                    while loop[-1] != start or len(loop) == 1:
                        loop.append(came_from[loop[-1]])
                    return loop[::-1]
                following.append(target)
        frontier = following
    raise AssertionError(f"no loop through {start} in {component}")


def describe_cycles(package_dir: Path) -> list[str]:
    """One paragraph per import cycle: its modules, then one loop with the line of each import."""
    graph = import_graph(package_dir)
    modules = module_files(package_dir)
    paragraphs = []
    for number, component in enumerate(strongly_connected(graph), 1):
        loop = shortest_loop(graph, component)
        steps = [
            f"    {modules[a].relative_to(package_dir.parent)}:{graph[a][b]} imports {b}"
            for a, b in zip(loop, loop[1:])
        ]
        paragraphs.append(f"cycle {number} ({len(component)} modules): {', '.join(component)}\n"
                          + "  for example:\n" + "\n".join(steps))
    return paragraphs


def test_no_import_cycle_inside_xattn():
    cycles = describe_cycles(PACKAGE_DIR)
    if cycles:
        pytest.fail(
            f"expected no import cycle inside xattn (function-local imports count); got {len(cycles)}:\n"
            + "\n".join(cycles)
            + "\nMove the piece both sides need down into a part they can both import, or pass it in.",
            pytrace=False,
        )


#: The parts of xattn from the bottom up (docs/architecture.md): a module may import its own part and
#: the parts below it, never one above or beside it. Leaves anyone may import: LEAVES.
LAYERS = (
    ("bridge",),
    ("contract",),
    ("numerics",),
    ("backends", "render"),
    ("comparison", "porting"),
    ("layers",),
    ("entry",),
)
LEAVES = ("xattn._compat", "xattn._environ", "xattn._version", "xattn.errors", "xattn.timing")
ENTRY_POINTS = ("xattn", "xattn.__main__", "xattn.api", "xattn.cli", "xattn.testing")
#: Entry points that are packages: every module inside one sits at the entry level too (the CLI's commands).
ENTRY_PACKAGES = ("xattn.cli",)


def part_of(module: str) -> str:
    if module in ENTRY_POINTS or module.startswith(tuple(f"{package}." for package in ENTRY_PACKAGES)):
        return "entry"
    return module.split(".")[1]


def layer_violations(graph: dict[str, dict[str, int]]) -> list[str]:
    rank = {part: index for index, parts in enumerate(LAYERS) for part in parts}
    found = []
    for module, edges in sorted(graph.items()):
        if module in LEAVES:
            found += [f"{module} imports {target} (a leaf imports nothing of xattn)"
                      for target in edges if target not in LEAVES]
            continue
        for target, line in edges.items():
            if target in LEAVES:
                continue
            here, there = part_of(module), part_of(target)
            if here != there and rank[there] >= rank[here]:
                found.append(f"{module}:{line} ({here}) imports {target} ({there})")
    return found


def test_imports_point_down_the_parts():
    graph = import_graph(PACKAGE_DIR)
    unknown = sorted({part_of(m) for m in graph if m not in LEAVES} - {p for parts in LAYERS for p in parts})
    assert not unknown, f"expected every subpackage placed in LAYERS; got new parts {unknown}: place them"
    violations = layer_violations(graph)
    assert not violations, "expected imports to point down " + " < ".join("/".join(p) for p in LAYERS) + "; got:\n" + \
        "\n".join(violations)


def test_the_layer_check_finds_an_upward_import():
    graph = {"xattn.numerics.drift": {"xattn.comparison.results": 3}, "xattn.comparison.results": {},
             "xattn.render.report": {"xattn.backends.env": 7}, "xattn.backends.env": {},
             "xattn.timing": {"xattn.numerics.drift": 1},
             "xattn.cli": {"xattn.cli.run": 2}, "xattn.cli.options": {}, "xattn.layers.check": {"xattn.cli.options": 9},
             "xattn.cli.run": {"xattn.cli.options": 4, "xattn.comparison.sweeper": 5}}
    assert layer_violations(graph) == [
        "xattn.layers.check:9 (layers) imports xattn.cli.options (entry)",
        "xattn.numerics.drift:3 (numerics) imports xattn.comparison.results (comparison)",
        "xattn.render.report:7 (render) imports xattn.backends.env (backends)",
        "xattn.timing imports xattn.numerics.drift (a leaf imports nothing of xattn)",
    ]


def _write_package(root: Path, files: dict[str, str]) -> Path:
    package_dir = root / "pkg"
    package_dir.mkdir()
    for name, source in files.items():
        (package_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (package_dir / name).write_text(textwrap.dedent(source))
    return package_dir


@pytest.mark.parametrize(
    "files, cycles",
    [
        pytest.param({"__init__.py": "", "a.py": "def f():\n    from pkg import b\n", "b.py": "import pkg.a\n"},
                     [["pkg.a", "pkg.b"]], id="function-local import"),
        pytest.param({"__init__.py": "", "a.py": "def f():\n    from . import b\n", "b.py": "from .a import f\n",
                      "c.py": "from pkg import a, b\n"},
                     [["pkg.a", "pkg.b"]], id="relative imports, and a module outside the cycle"),
        pytest.param({"__init__.py": "from pkg.a import f\n", "a.py": "def f():\n    from pkg import b\n",
                      "b.py": "x = 1\n"},
                     [], id="a facade that re-exports a submodule is no cycle"),
        pytest.param({"__init__.py": "from pkg.a import f\nVERSION = 1\n", "a.py": "from pkg import VERSION\n"},
                     [["pkg", "pkg.a"]], id="a module that takes a name from its package's facade"),
        pytest.param({"__init__.py": "", "sub/__init__.py": "from pkg.sub.x import g\n",
                      "sub/x.py": "def g():\n    from ..sub import y\n", "sub/y.py": "from pkg.sub import x\n"},
                     [["pkg.sub.x", "pkg.sub.y"]], id="subpackage, two-level relative import"),
    ],
)
def test_the_cycle_check_finds_cycles_in_a_small_package(tmp_path, files, cycles):
    package_dir = _write_package(tmp_path, files)
    assert strongly_connected(import_graph(package_dir)) == cycles
    described = describe_cycles(package_dir)
    assert len(described) == len(cycles)
    for paragraph, component in zip(described, cycles):
        assert paragraph.startswith(f"cycle 1 ({len(component)} modules): {', '.join(component)}")


def test_a_reported_cycle_names_each_import_and_its_line(tmp_path):
    package_dir = _write_package(tmp_path, {"__init__.py": "", "a.py": "import os\n\ndef f():\n    from pkg import b\n",
                                            "b.py": "from pkg import a\n"})
    assert describe_cycles(package_dir) == [
        "cycle 1 (2 modules): pkg.a, pkg.b\n  for example:\n"
        f"    {Path('pkg', 'a.py')}:4 imports pkg.b\n    {Path('pkg', 'b.py')}:1 imports pkg.a"
    ]


# ------------------------------------------------------------------------- no framework in the core


def test_every_core_module_imports_without_a_framework():
    code = textwrap.dedent(
        f"""
        import importlib, json, pkgutil, sys
        import xattn

        skipped, frameworks = set({FRAMEWORK_MODULES!r}), set({FRAMEWORKS!r})
        seen, imported, loaded_by = [], [], {{}}
        for info in pkgutil.walk_packages(xattn.__path__, "xattn."):
            seen.append(info.name)
            if info.name not in skipped:
                importlib.import_module(info.name)
                imported.append(info.name)
                for framework in frameworks & {{name.split(".")[0] for name in sys.modules}}:
                    loaded_by.setdefault(framework, info.name)
        print(json.dumps({{"seen": seen, "imported": imported, "loaded_by": loaded_by}}))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    stale = sorted(set(FRAMEWORK_MODULES) - set(report["seen"]))
    assert not stale, f"FRAMEWORK_MODULES names modules that no longer exist: {stale}; remove or rename them"
    assert {"xattn", *report["seen"]} == set(module_files(PACKAGE_DIR))  # the walk reached every file
    assert set(report["imported"]) == set(report["seen"]) - set(FRAMEWORK_MODULES)
    culprits = ", ".join(f"{framework} (first there after importing {module})"
                         for framework, module in sorted(report["loaded_by"].items()))
    assert not culprits, (
        f"expected importing xattn's core modules to load no framework; got {culprits}. Import the"
        " framework inside the function that needs it, or make the module a framework module, loaded"
        " through the registry only, and list it in FRAMEWORK_MODULES"
    )


# ------------------------------------------------------------------------------------- the top level


def test_the_top_level_holds_at_most_a_dozen_modules():
    entry_packages = [PACKAGE_DIR / package.split(".", 1)[1] for package in ENTRY_PACKAGES]
    stale = [str(path) for path in entry_packages if not (path / "__init__.py").is_file()]
    assert not stale, f"ENTRY_PACKAGES names packages that no longer exist: {stale}; remove or rename them"
    top = sorted(path.name for path in PACKAGE_DIR.glob("*.py")) + [f"{path.name}/" for path in entry_packages]
    assert len(top) <= MOST_TOP_LEVEL_MODULES, (
        f"expected at most {MOST_TOP_LEVEL_MODULES} modules directly in xattn/; got {len(top)}: {top}."
        " Move a module into the part (subpackage) it belongs to"
    )


def test_no_module_shadows_a_public_name():
    assert {"compare", "sweep"} <= set(xattn.__all__)
    top = {path.stem for path in PACKAGE_DIR.glob("*.py")}
    top |= {path.name for path in PACKAGE_DIR.iterdir() if (path / "__init__.py").is_file()}
    shadowing = sorted(top & set(xattn.__all__))
    assert not shadowing, (
        f"expected no module or subpackage of xattn named like a public name; got {shadowing}: importing"
        " xattn.<name> would replace the function with the module. Rename the module"
    )
    for name in ("compare", "sweep"):
        assert importlib.util.find_spec(f"xattn.{name}") is None
