"""Imports point one way: no cycle in the package's import graph (function-level imports
included), each module imports alone, and the settings import no registry and no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "vae_cli"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str) -> set[str]:
    """Package modules `name` imports anywhere (also inside functions), except under
    `if TYPE_CHECKING:`, which never runs. `from a import b` counts a.b when b is a module."""
    tree = ast.parse(MODULES[name].read_text())
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and is_type_checking(node)
               for n in ast.walk(node)}  # fmt: skip
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], base]).strip(".")
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m in MODULES and m != name}


def test_the_walk_sees_function_level_imports():
    """Not a tautology check of the graph: cli imports the training code only inside commands."""
    assert "vae_cli.training.fit" in imports_of("vae_cli.cli")


def test_import_graph_has_no_cycle():
    graph = {name: imports_of(name) for name in MODULES}
    # Parent packages are imported on the way to a sub-module; an __init__ that imports its
    # children is not a cycle with them, so edges into package __init__s are left out.
    graph = {n: {m for m in deps if MODULES[m].name != "__init__.py"} for n, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = [*stack[stack.index(dep) :], dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_settings_and_cli_import_no_registry_and_no_torch():
    for leaf in ("vae_cli.settings", "vae_cli.options", "vae_cli.errors"):
        tree = ast.parse(MODULES[leaf].read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not {m for m in names if m.split(".")[0] in ("torch", "pytorch_lightning")}, leaf
        inner = ("vae_cli.model", "vae_cli.data", "vae_cli.training")
        assert not {m for m in names if m.startswith(inner)}, leaf


@pytest.mark.slow
def test_every_module_imports_alone_in_a_fresh_interpreter():
    code = "import importlib, sys; importlib.import_module(sys.argv[1])"
    failed = {}
    for name in MODULES:
        if name == "vae_cli.__main__":
            continue  # runs the CLI on import
        proc = subprocess.run([sys.executable, "-c", code, name], cwd=ROOT, capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        if proc.returncode != 0:
            failed[name] = proc.stderr.strip().splitlines()[-1]
    assert not failed, failed


REGISTRIES = (
    "vae_cli.model.likelihoods",
    "vae_cli.model.networks",
    "vae_cli.model.build",
    "vae_cli.data.registry",
    "vae_cli.data.datasets",
    "vae_cli.training.objectives",
    "vae_cli.training.schedules",
)


@pytest.mark.parametrize("registry", REGISTRIES)
def test_registries_are_leaves_that_import_no_config(registry: str):
    """torch.distributions' kl.py imports its leaves, never the other way round: a registry
    takes a built config (type hints under TYPE_CHECKING only); names are checked where the
    settings declare them (tests/test_settings.py), not by the registry importing them."""
    assert not imports_of(registry) & {"vae_cli.settings", "vae_cli.config", "vae_cli.options", "vae_cli.cli"}
