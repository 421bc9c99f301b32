"""Every error code the code can raise is raised and asserted by at least one test.

A code is stable API: CI and callers branch on it. One nobody ever triggers can silently stop
being raised (or be raised with the wrong code) in a refactor. This test collects the codes
statically, the way a reader would grep them, and fails listing each code that appears
(quoted, as a string) in no other test file.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.settings import PROJECT_ROOT, SHIPPED_PACKAGES

pytestmark = pytest.mark.unit

# First-party packages whose errors are collected (the layers of docs/adr/0001-layout.md).
PACKAGES = tuple(p for p in SHIPPED_PACKAGES if p != "testing")

# Codes no test can raise on this machine, each with the reason. Keep it short: a code
# belongs here only when triggering it needs a cluster, a GPU or a multi-process run.
ALLOWED_UNTESTED: dict[str, str] = {
    # eval/harness.py: lm-eval's simple_evaluate returns None only on a non-zero rank of a
    # multi-process (accelerate/torchrun) evaluation; the stage runs the harness in one
    # process, where rank is always 0.
    "EVAL_HARNESS_FAILED": "needs a multi-process lm-eval run (non-zero rank)",
}

TESTS_DIR = PROJECT_ROOT / "tests"


def _python_files() -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted((PROJECT_ROOT / package).rglob("*.py"))


def _call_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def error_types(files: list[tuple[Path, ast.Module]]) -> set[str]:
    """Exception classes whose __init__ takes `code` first (StageError, RegistryError, ...)
    and their subclasses that keep it (EvalError)."""
    found = set()
    classes = [node for _, tree in files for node in ast.walk(tree)
               if isinstance(node, ast.ClassDef)]
    for node in classes:
        for item in node.body:
            if (isinstance(item, ast.FunctionDef) and item.name == "__init__"
                    and len(item.args.args) > 1 and item.args.args[1].arg == "code"):
                found.add(node.name)
    inheriting = {node.name: {b.id for b in node.bases if isinstance(b, ast.Name)}
                  for node in classes
                  if not any(isinstance(i, ast.FunctionDef) and i.name == "__init__"
                             for i in node.body)}
    while True:
        more = {name for name, bases in inheriting.items() if bases & found} - found
        if not more:
            return found
        found |= more


def _string_values(node: ast.expr) -> list[str] | None:
    """The codes a first argument can hold, or None when it cannot be read statically."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        body, orelse = _string_values(node.body), _string_values(node.orelse)
        return None if body is None or orelse is None else body + orelse
    return None


def _assigned_strings(tree: ast.Module, name: str) -> list[str] | None:
    """`code = "A"` / `code = "A" if x else "B"` anywhere in the module, for `Error(code, ...)`."""
    values: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == name for t in node.targets):
            found = _string_values(node.value)
            if found is None:
                return None
            values.extend(found)
    return values or None


@functools.cache
def collect_codes() -> tuple[dict[str, list[str]], list[str]]:
    """code -> ["path:line", ...] where it is raised; and raises whose code is unreadable."""
    files = [(path, ast.parse(path.read_text(), str(path))) for path in _python_files()]
    types = error_types(files)
    codes: dict[str, list[str]] = {}
    unreadable: list[str] = []
    for path, tree in files:
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and _call_name(node.func) in types):
                continue
            where = f"{path.relative_to(PROJECT_ROOT)}:{node.lineno}"
            first = node.args[0] if node.args else next(
                (k.value for k in node.keywords if k.arg == "code"), None)
            if first is None:
                continue  # the class definition's own super().__init__ and the like
            values = _string_values(first)
            if values is None and isinstance(first, ast.Name):
                values = _assigned_strings(tree, first.id)
            if values is None and isinstance(first, ast.Attribute) and first.attr == "code":
                continue  # re-raised with the code of a caught error, collected at its source
            if values is None:
                unreadable.append(f"{where}: {ast.unparse(first)}")
                continue
            for code in values:
                codes.setdefault(code, []).append(where)
    return codes, unreadable


def _codes_in_tests(codes: set[str]) -> set[str]:
    """Codes quoted as a string literal in some test file other than this one."""
    text = "\n".join(path.read_text() for path in sorted(TESTS_DIR.rglob("*.py"))
                     if path.resolve() != Path(__file__).resolve())
    return {code for code in codes if re.search(rf"""["']{re.escape(code)}["']""", text)}


def test_codes_are_collected() -> None:
    codes, _ = collect_codes()
    # The collector itself works: the well-known codes of each error type are found.
    assert {"CONFIG_UNKNOWN_KEY", "VERIFICATION_FAILED", "EVAL_GATE_FAILED"} <= set(codes)
    assert len(codes) >= 60


def test_every_raise_has_a_readable_code() -> None:
    _, unreadable = collect_codes()
    assert unreadable == [], (
        "error codes this test cannot read statically (use a string literal, or assign the "
        f"code from literals in the same module): {unreadable}")


def test_every_error_code_is_asserted_by_a_test() -> None:
    codes, _ = collect_codes()
    untested = set(codes) - _codes_in_tests(set(codes)) - set(ALLOWED_UNTESTED)
    listing = "\n".join(f"  {code}  (raised at {', '.join(codes[code])})"
                        for code in sorted(untested))
    assert not untested, f"{len(untested)} error code(s) no test raises and asserts:\n{listing}"


def test_allow_list_holds_only_live_untested_codes() -> None:
    codes, _ = collect_codes()
    stale = sorted(set(ALLOWED_UNTESTED) - set(codes))
    assert not stale, f"allow-listed codes no longer raised anywhere: {stale}"
    now_tested = sorted(set(ALLOWED_UNTESTED) & _codes_in_tests(set(codes)))
    assert not now_tested, f"allow-listed codes that a test now asserts (remove them): " \
                           f"{now_tested}"
