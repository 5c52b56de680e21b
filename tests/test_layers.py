"""The package's layers import only downward (docs/architecture.md).

An AST walk over every module of `ussd_gateway`, lazy imports inside functions
included: a module may import its own layer and the layers below it, never one above,
and the two channel packages never import each other. The server's layers never import
the testers' toolkit.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ussd_gateway"

# Bottom to top. A module's layer is its first package under `ussd_gateway`.
LAYERS = ("core", "sessions", "backend", "services", "menus", "dispatch", "campaigns", "channels", "app", "testkit", "cli")
RANK = {name: rank for rank, name in enumerate(LAYERS)}
MAX_MODULE_LINES = 500


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "ussd_gateway" or len(parts) < 2:
        return None  # the root package's docstring only
    return parts[1]


def project_imports(path: Path) -> list[tuple[int, str]]:
    """Every `ussd_gateway…` module a file imports, relative imports resolved."""
    own = module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # `from ussd_gateway.channels import http` names a module too
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names
                      if (PACKAGE.parent / Path(*f"{target}.{alias.name}".split("."))).with_suffix(".py").exists()
                      or (PACKAGE.parent / Path(*f"{target}.{alias.name}".split("."))).is_dir()]
    return [(line, name) for line, name in found if name == "ussd_gateway" or name.startswith("ussd_gateway.")]


def violations() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = module_name(path)
        source_layer = layer_of(source)
        if source_layer is None:
            continue
        for line, target in project_imports(path):
            target_layer = layer_of(target)
            where = f"{path.relative_to(PACKAGE.parent)}:{line}"
            if target_layer is None or target_layer not in RANK:
                problems.append(f"{where}: imports {target}, which is in no layer")
            elif RANK[target_layer] > RANK[source_layer]:
                problems.append(f"{where}: {source_layer} imports {target} from the {target_layer} layer above it")
            elif source_layer == target_layer == "channels":
                source_channel, target_channel = source.split(".")[2:3], target.split(".")[2:3]
                if source_channel and target_channel and source_channel != target_channel:
                    problems.append(f"{where}: channel {source_channel[0]} imports channel {target_channel[0]}")
    return problems


class TestLayers:
    def test_every_layer_is_a_package(self) -> None:
        """Each name in the layer list is a package or module of ussd_gateway, and every
        package under it is in the list: a new folder must be placed in the order."""
        present = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
        present |= {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
        assert present == set(LAYERS)

    def test_imports_run_downward(self) -> None:
        """No module imports a layer above its own, nor the other channel."""
        assert violations() == []

    def test_the_server_never_imports_the_testkit(self) -> None:
        """Only the CLI reaches the testers' toolkit."""
        below_testkit = [p for p in violations() if "testkit" in p]
        assert below_testkit == []

    def test_the_check_sees_an_upward_import(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """The walk itself finds an upward import (so the test above can fail)."""
        fake = tmp_path / "ussd_gateway"
        (fake / "core").mkdir(parents=True)
        (fake / "app").mkdir()
        for folder in (fake, fake / "core", fake / "app"):
            (folder / "__init__.py").write_text("")
        (fake / "core" / "bad.py").write_text("def f():\n    from ussd_gateway.app import wiring\n")
        (fake / "app" / "wiring.py").write_text("")
        monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
        assert violations() == ["ussd_gateway/core/bad.py:2: core imports ussd_gateway.app from the app layer above it",
                                "ussd_gateway/core/bad.py:2: core imports ussd_gateway.app.wiring from the app layer above it"]


def test_modules_stay_small_or_say_why() -> None:
    """A module over about 500 lines states at its top why it is one module."""
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES and "One module because" not in text[:3000]:
            long.append(f"{path.relative_to(PACKAGE.parent)}: {text.count(chr(10))} lines")
    assert long == []


def test_every_package_is_installed() -> None:
    """pyproject.toml lists every package of the tree (a wheel would lack one it missed)."""
    import tomllib

    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    present = {module_name(init) for init in PACKAGE.rglob("__init__.py")}
    assert present - listed == set()
