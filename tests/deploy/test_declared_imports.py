"""Every third-party module labmate's packages import is a requirement pyproject.toml declares
(base or the image's `server` extra): the image installs only those, while the test venv also has
the dev extra and every transitive dependency, where an undeclared import would still work."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions

from tests.deploy.compose import ROOT

PACKAGES = ("labmate", "bot", "tasks", "models")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["server"]]
    return {_normal(re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0]) for requirement in requirements}


def _imported() -> dict[str, str]:
    """Top-level module -> the first file importing it, over the installed packages' sources."""
    found: dict[str, str] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts or path.name == "pytest_plugin.py":  # loaded only by pytest itself
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def test_every_third_party_import_is_a_declared_requirement():
    declared = _declared()
    distributions = packages_distributions()
    undeclared = {}
    for module, where in _imported().items():
        if module in sys.stdlib_module_names or module in PACKAGES or module == "__future__":
            continue
        providers = {_normal(d) for d in distributions.get(module, [])} | {_normal(module)}
        if not providers & declared:
            undeclared[module] = where
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
