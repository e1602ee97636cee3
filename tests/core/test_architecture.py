"""The house plan's import rules (DESIGN.md §4), checked on the source itself."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "fedpharma"
LAYERS = {
    "core": {"errors", "serde", "config", "params", "protocol"},
    "capability": {"strategy", "privacy", "secure", "data", "models", "evaluation", "report"},
    "runtime": {"server", "site", "transport"},
    "composition": {"cli", "sim"},
}
RANK = {"core": 0, "capability": 1, "runtime": 2, "composition": 3}
LAYER_OF = {part: layer for layer, parts in LAYERS.items() for part in parts}


def _part(module: str) -> str | None:
    pieces = module.split(".")
    return pieces[1] if pieces[0] == "fedpharma" and len(pieces) > 1 else None


def _runtime_imports(path: Path) -> set[str]:
    """fedpharma modules imported when the file runs (imports under TYPE_CHECKING excluded)."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
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
    for module in _runtime_imports(path):
        other = _part(module)
        if other is None or other == own:
            continue
        other_layer = LAYER_OF[other]
        assert RANK[other_layer] <= RANK[own_layer], f"{own} ({own_layer}) imports {module}"
        if own_layer == other_layer == "capability":
            pytest.fail(f"capability {own} imports capability {module}")


def test_importing_the_package_and_its_core_stays_light():
    code = (
        "import sys, fedpharma, fedpharma.config, fedpharma.params, fedpharma.protocol.codec,"
        " fedpharma.strategy, fedpharma.server.store, fedpharma.report;"
        " print(','.join(m for m in ('torch', 'rdkit', 'tenseal', 'grpc', 'matplotlib', 'jinja2')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
