"""No test tier imports another: what tiers share lives in ``tests/support``.

A tier (``tests/unit``, ``tests/integration``, ``tests/chaos``, ``tests/e2e``,
``tests/e2e_real``) may import itself and
``tests.support``; ``tests.support``, the top-level conftest and ``bench`` may import only
``tests.support``. Otherwise running one tier would depend on another's files, and a
helper would have two homes.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.support.paths import REPO_ROOT

TIERS = ("unit", "integration", "chaos", "e2e", "e2e_real")


def _module_of(path: Path, root: Path) -> list[str]:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imports(path: Path, root: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    module_parts = _module_of(path, root)
    package = module_parts if path.name == "__init__.py" else module_parts[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            if node.module is None or node.level:
                for alias in node.names:  # `from . import x` may name a module
                    yield node.lineno, f"{module}.{alias.name}"
            else:
                yield node.lineno, module


def _allowed(path: Path, root: Path) -> tuple[str, ...]:
    parts = path.relative_to(root).parts
    if parts[0] == "tests" and len(parts) > 2 and parts[1] in TIERS:
        return ("tests.support", f"tests.{parts[1]}")
    return ("tests.support",)


def _violations(root: Path = REPO_ROOT) -> list[str]:
    found = []
    files = [*(root / "tests").rglob("*.py"), *(root / "bench").rglob("*.py")]
    for path in sorted(files):
        allowed = _allowed(path, root)
        for lineno, module in _imports(path, root):
            if module != "tests" and not module.startswith("tests."):
                continue
            if not any(module == a or module.startswith(a + ".") for a in allowed):
                found.append(f"{path.relative_to(root)}:{lineno} imports {module}")
    return found


def test_no_tier_imports_another_tier() -> None:
    assert _violations() == []


def test_the_check_sees_a_cross_tier_import(tmp_path: Path) -> None:
    (tmp_path / "tests" / "integration").mkdir(parents=True)
    (tmp_path / "bench").mkdir()
    (tmp_path / "tests" / "integration" / "test_x.py").write_text(
        "from tests.unit.launcher import conftest\nfrom ..e2e import conftest as c\nfrom . import ok\n"
    )
    (tmp_path / "bench" / "b.py").write_text(
        "from tests.e2e import harness\nfrom tests.support import kube\n"
    )
    assert _violations(tmp_path) == [
        "bench/b.py:1 imports tests.e2e",
        "tests/integration/test_x.py:1 imports tests.unit.launcher",
        "tests/integration/test_x.py:2 imports tests.e2e.conftest",
    ]
