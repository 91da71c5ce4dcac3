"""The package's shape, read from the imports themselves: no import cycles between modules, and
no module importing one of a layer above its own. Every import counts, the ones inside functions
and under ``if TYPE_CHECKING:`` included: a cycle hidden in a function is still a cycle."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "stylempi"

#: The layers, lowest first. A module belongs to the layer of the longest prefix listed here that
#: names it; it may import its own layer and those below, never one above. Declared once, here.
LAYERS: list[tuple[str, ...]] = [
    ("stylempi", "stylempi.errors"),                    # the version, exit codes and error types
    ("stylempi.colour", "stylempi.storage.files",       # pure colour maths, local file helpers
     "stylempi.storage.tempdirs", "stylempi.storage.holders", "stylempi.storage.safefiles"),
    ("stylempi.storage",),                              # the backend protocol, Blob storage (azure/)
    ("stylempi.media",),                                # PyAV: probe, decode, encode, assemble
    ("stylempi.network",),                              # the style network on a device
    ("stylempi.options",),                              # what a job is asked to do
    ("stylempi.job",),                                  # the MPI job's phases, its files through storage
    ("stylempi.training", "stylempi.tools"),            # training; verify, preview, export, demo
    ("stylempi.cli", "stylempi.__main__"),              # the command line
]

#: At most this many entries at the top of the package (modules and subpackages).
MAX_TOP_LEVEL = 12


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The stylempi modules NAME imports, anywhere in its source. ``from P import x`` counts
    as an import of module P.x where that is a module, else of P. Importing P.x from outside
    package P runs P's ``__init__`` first, so that counts as an import of P too."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import stylempi.x.y` names a module, or its package
                target = target.rpartition(".")[0]
            if not target.startswith("stylempi"):
                continue
            found.add(target)
            parent = target.rpartition(".")[0]
            while parent and not (package == parent or package.startswith(parent + ".")):
                found.add(parent)  # an __init__ that runs before TARGET
                parent = parent.rpartition(".")[0]
    found.discard(name)
    return found


def layer_of(name: str) -> int:
    best, layer = -1, None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
                best, layer = len(prefix), index
    assert layer is not None, f"{name} is in no layer: add it to LAYERS"
    return layer


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first repeated last), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
                  for a, targets in edges.items() for b in targets if layer_of(b) > layer_of(a))


def test_no_module_imports_a_layer_above_its_own():
    assert upward_imports(graph()) == []


def test_there_are_no_import_cycles():
    assert find_cycle(graph()) is None


def test_every_module_is_in_a_layer():
    for name in all_modules():
        layer_of(name)


def test_the_top_of_the_package_stays_small():
    # A folder left holding only __pycache__ (a module that moved away) is not an entry.
    entries = [p.name for p in PACKAGE.iterdir()
               if p.suffix == ".py" or (p.is_dir() and p.name != "__pycache__" and any(p.rglob("*.py")))]
    assert len(entries) <= MAX_TOP_LEVEL, sorted(entries)


def test_every_subpackage_says_what_it_owns_and_must_not_import():
    for init in PACKAGE.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        if init.parent.name == "styles" or init.parent == PACKAGE:
            continue  # the built-in styles' data, and the package itself
        assert "import" in doc.lower(), f"{init}: its docstring should say what it must not import"


# The checks above must be able to fail: each is run here on a small made-up graph.

def test_a_cycle_is_found_even_through_a_function_level_import(tmp_path):
    edges = {"stylempi.job.run": {"stylempi.job.prepare"}, "stylempi.job.prepare": {"stylempi.job.worker"},
             "stylempi.job.worker": {"stylempi.job.run"}, "stylempi.errors": set()}
    assert find_cycle(edges) == ["stylempi.job.prepare", "stylempi.job.worker", "stylempi.job.run",
                                 "stylempi.job.prepare"]
    source = tmp_path / "stylempi" / "a.py"
    source.parent.mkdir()
    source.write_text("def f():\n    from .b import g\n")
    (tmp_path / "stylempi" / "b.py").write_text("from . import a\n")
    modules = {"stylempi.a": source, "stylempi.b": tmp_path / "stylempi" / "b.py"}
    assert imports_of("stylempi.a", source, modules) == {"stylempi.b"}
    assert imports_of("stylempi.b", modules["stylempi.b"], modules) == {"stylempi.a"}


def test_a_package_init_that_imports_back_is_a_cycle(tmp_path):
    """job.workfiles importing storage.files runs storage's __init__ first: had that imported
    staging, which imports job.workfiles, importing job.workfiles first would fail."""
    root = tmp_path / "stylempi"
    for rel, text in {"__init__.py": "", "job/__init__.py": "", "job/workfiles.py": "from ..storage.files import f\n",
                      "storage/__init__.py": "from .staging import g\n", "storage/files.py": "",
                      "storage/staging.py": "from ..job.workfiles import h\nfrom .files import f\n"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    modules = {"stylempi": root / "__init__.py", "stylempi.job": root / "job/__init__.py",
               "stylempi.job.workfiles": root / "job/workfiles.py", "stylempi.storage": root / "storage/__init__.py",
               "stylempi.storage.files": root / "storage/files.py",
               "stylempi.storage.staging": root / "storage/staging.py"}
    edges = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert edges["stylempi.job.workfiles"] == {"stylempi.storage.files", "stylempi.storage"}
    assert edges["stylempi.storage.staging"] == {"stylempi.job.workfiles", "stylempi.job", "stylempi.storage.files"}
    assert find_cycle(edges) is not None


@pytest.mark.parametrize("low, high", [("stylempi.media.encoding", "stylempi.job.run"),
                                       ("stylempi.storage.files", "stylempi.job.staging"),
                                       ("stylempi.storage.backend", "stylempi.job.staging")])
def test_an_upward_import_is_reported(low, high):
    assert upward_imports({low: {high}, high: set()}) != []
    assert upward_imports({high: {low}, low: set()}) == []
