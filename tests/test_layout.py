"""tests/ mirrors vae_cli/ (docs/index.md): every module with logic has its own test module,
vae_cli/<package>/<name>.py -> tests/<package>/test_<name>.py and vae_cli/<name>.py ->
tests/test_<name>.py, so the test of a change is found by its path. A new module with logic
and no test module of its own fails here; ALLOWED lists, with the reason, the ones left without.
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "vae_cli"
TESTS = ROOT / "tests"
LOGIC_LINES = 30  # more lines of code than this (docstrings, comments, blank lines not counted)
NOT_MODULES = ("__init__.py", "__main__.py")

# Modules with logic and no test module of their own: path under vae_cli/ -> why.
ALLOWED = {
    # The estimators are its only user and tests/model/test_estimators.py checks its densities
    # through them against independent references (exact linear-Gaussian log p(x), the IW bound
    # written out by hand in float64); a test of its own would repeat those.
    "model/vae.py": "tested through tests/model/test_estimators.py",
}


def logic_lines(path: Path) -> int:
    """Lines holding code: not blank, not only a comment, not part of a docstring."""
    source = path.read_text()
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(getattr(first.value, "value", None), str):
                docstrings.update(range(first.lineno, first.end_lineno + 1))
    skip = {
        tokenize.COMMENT,
        tokenize.NL,
        tokenize.NEWLINE,
        tokenize.INDENT,
        tokenize.DEDENT,
        tokenize.ENDMARKER,
    }
    lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in skip:
            lines.update(range(tok.start[0], tok.end[0] + 1))
    return len(lines - docstrings)


def mirror(module: Path, package: Path = PACKAGE, tests: Path = TESTS) -> Path:
    """vae_cli/sweep/grid.py -> tests/sweep/test_grid.py; vae_cli/runs.py -> tests/test_runs.py."""
    rel = module.relative_to(package)
    return tests / rel.parent / f"test_{rel.name}"


def with_logic(package: Path = PACKAGE) -> list[Path]:
    return [p for p in sorted(package.rglob("*.py"))
            if p.name not in NOT_MODULES and logic_lines(p) > LOGIC_LINES]  # fmt: skip


def untested(package: Path = PACKAGE, tests: Path = TESTS) -> list[str]:
    """Modules with logic whose mirror test module does not exist, as paths under package/."""
    return [
        p.relative_to(package).as_posix()
        for p in with_logic(package)
        if not mirror(p, package, tests).is_file()
    ]


def test_every_module_with_logic_has_its_own_test_module():
    missing = [m for m in untested() if m not in ALLOWED]
    assert missing == [], (
        f"no test module for {missing}: add tests/<package>/test_<name>.py (or tests/test_<name>.py) "
        f"beside the others, or list the module in ALLOWED with the reason"
    )


def test_the_allow_list_holds_only_modules_still_without_tests():
    assert sorted(set(ALLOWED) - set(untested())) == [], "remove these from ALLOWED: they have tests now"


def test_a_new_module_without_tests_is_found(tmp_path: Path):
    package, tests = tmp_path / "vae_cli", tmp_path / "tests"
    (package / "sub").mkdir(parents=True)
    (tests / "sub").mkdir(parents=True)
    body = '"""A docstring\n\nof several lines."""\n\n# a comment\n' + "".join(
        f"def f{i}(x):\n    return x + {i}\n\n" for i in range(LOGIC_LINES // 2 + 1)
    )
    (package / "sub" / "big.py").write_text(body)  # 32 lines of code
    (package / "sub" / "small.py").write_text("X = 1\n")
    (package / "top.py").write_text(body)
    (package / "sub" / "__init__.py").write_text(body)
    assert logic_lines(package / "sub" / "big.py") == 2 * (LOGIC_LINES // 2 + 1)
    assert untested(package, tests) == ["sub/big.py", "top.py"]
    (tests / "sub" / "test_big.py").write_text("")
    (tests / "test_top.py").write_text("")
    assert untested(package, tests) == []
