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


# One fresh interpreter imports the heavy third-party libraries once and then forks a child per
# module: each child imports that one vae_cli module (and what it imports) into an interpreter
# that holds no vae_cli module, which is what "imports alone" checks (an import cycle or a
# missing import inside the package fails there), without paying torch's start-up ~100 times.
ALONE = r"""
import importlib, os, sys, traceback
import numpy, torch, torchvision, pytorch_lightning  # noqa: F401  (third-party only)
assert not [m for m in sys.modules if m.startswith("vae_cli")]
failed = {}
for name in sys.argv[1:]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            importlib.import_module(name)
            code = 0
        except BaseException:
            os.write(w, traceback.format_exc().strip().splitlines()[-1].encode())
            code = 1
        os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        message = f.read()
    _, status = os.waitpid(pid, 0)
    if status != 0:
        failed[name] = message or f"exit status {status}"
print(failed)
sys.exit(1 if failed else 0)
"""


def import_alone(names: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", ALONE, *names], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)  # fmt: skip


@pytest.mark.slow
def test_every_module_imports_alone_in_a_fresh_interpreter():
    names = [name for name in MODULES if name != "vae_cli.__main__"]  # __main__ runs the CLI
    proc = import_alone(names)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the harness can fail: a module that does not import is reported
    broken = import_alone(["vae_cli.no_such_module"])
    assert broken.returncode == 1 and "vae_cli.no_such_module" in broken.stdout


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
