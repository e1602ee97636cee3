"""The house plan's import rules (DESIGN.md §4), checked on the source itself."""

import ast
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "fedpharma"
LAYERS = {
    "core": {"core"},
    "capability": {"strategy", "privacy", "secure", "data", "models", "evaluation", "report"},
    "runtime": {"server", "site", "transport"},
    "composition": {"cli", "sim", "bundle", "api", "tracking"},
}
RANK = {"core": 0, "capability": 1, "runtime": 2, "composition": 3}
LAYER_OF = {part: layer for layer, parts in LAYERS.items() for part in parts}


def _part(module: str) -> str | None:
    pieces = module.split(".")
    return pieces[1] if pieces[0] == "fedpharma" and len(pieces) > 1 else None


def _imports(path: Path) -> set[str]:
    """fedpharma modules the file imports, those imported only for type checking included: a
    type is a dependency too."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.startswith("fedpharma")}


SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE or p.stem != "__init__")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_lower_layers_never_import_higher_ones_nor_capabilities_each_other(path):
    own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    own_layer = LAYER_OF.get(own)
    assert own_layer is not None, f"{own} is in no layer of DESIGN.md §4; add it there"
    for module in _imports(path):
        other = _part(module)
        if other is None or other == own:
            continue
        other_layer = LAYER_OF[other]
        assert RANK[other_layer] <= RANK[own_layer], f"{own} ({own_layer}) imports {module}"
        if own_layer == other_layer == "capability":
            pytest.fail(f"capability {own} imports capability {module}")


def test_importing_the_package_and_its_core_stays_light():
    code = (
        "import sys, fedpharma, fedpharma.core.config, fedpharma.core.params,"
        " fedpharma.core.protocol.codec, fedpharma.strategy, fedpharma.server.store,"
        " fedpharma.report;"
        " print(','.join(m for m in ('torch', 'rdkit', 'tenseal', 'grpc', 'matplotlib', 'jinja2')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def _module_name(path: Path) -> str:
    parts = ("fedpharma", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_imports(path: Path, modules: Mapping[str, Path]) -> set[str]:
    """The package's modules ``path`` imports; ``from package import module`` names the module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            named = {f"{node.module}.{alias.name}" for alias in node.names} & modules.keys()
            found |= named or {node.module}
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found & modules.keys()


def test_no_import_cycle_between_modules():
    """Modules import each other in one direction only (type-checking imports included)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: _module_imports(path, modules) - {name} for name, path in modules.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " → ".join([*path[path.index(nxt) :], nxt]))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in sorted(modules):
        if name not in state:
            visit(name, [name])
