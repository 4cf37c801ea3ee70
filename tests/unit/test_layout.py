"""The layout's rule: the tenant side never imports the host side, and the shared pure modules
import neither (so each side can be read, and tested, on its own)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

COMPONENTS = Path(__file__).resolve().parents[2] / "components"


def _imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return modules


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("tenant", ("components.host",)), ("common", ("components.host", "components.tenant"))],
)
def test_a_side_imports_only_what_the_layout_allows(
    package: str, forbidden: tuple[str, ...]
) -> None:
    files = sorted((COMPONENTS / package).rglob("*.py"))
    assert files, f"no modules in components/{package}"
    crossings = {
        f"{path.relative_to(COMPONENTS)} imports {module}"
        for path in files
        for module in _imported_modules(path)
        if module.startswith(forbidden)
    }
    assert not crossings, sorted(crossings)
