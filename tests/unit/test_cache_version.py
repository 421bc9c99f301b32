"""`tasks.caching.code_version`: the Flyte cache version of a stage, derived from its code.

A stale cache hit after a code edit silently reuses old outputs; a version that changes when
nothing changed re-runs an hour of training. Both directions are tested on a copy of a
small tree (PROJECT_ROOT pointed at it), and on fake installed distributions on sys.path.
"""

from __future__ import annotations

import ast
import sys
from importlib import metadata
from pathlib import Path

import pytest

import tasks.caching
from common.settings import PROJECT_ROOT, SHIPPED_PACKAGES
from tasks.caching import COMMON, code_version

pytestmark = pytest.mark.unit


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    tree = tmp_path / "project"
    (tree / "stage" / "sub").mkdir(parents=True)
    (tree / "stage" / "a.py").write_text("A = 1\n")
    (tree / "stage" / "sub" / "b.py").write_text("B = 2\n")
    (tree / "tasks").mkdir()
    (tree / "tasks" / "t.py").write_text("T = 3\n")
    monkeypatch.setattr(tasks.caching, "PROJECT_ROOT", tree)
    return tree


def version(packages: tuple[str, ...] = ()) -> str:
    return code_version("stage", "tasks/t.py", packages=packages)


def test_stable_for_unchanged_code(root: Path) -> None:
    first = version()
    assert version() == first
    assert len(first) == 16 and int(first, 16) >= 0
    # The order the paths are listed in is not part of the key.
    assert code_version("tasks/t.py", "stage") == first


def test_changes_when_a_listed_file_changes(root: Path) -> None:
    before = version()
    (root / "tasks" / "t.py").write_text("T = 4\n")
    assert version() != before


def test_directory_is_hashed_recursively(root: Path) -> None:
    before = version()
    (root / "stage" / "sub" / "b.py").write_text("B = 3\n")
    changed = version()
    assert changed != before
    (root / "stage" / "sub" / "new.yaml").write_text("k: v\n")  # data files count too
    assert version() != changed


def test_renaming_a_file_changes_the_version(root: Path) -> None:
    before = version()
    (root / "stage" / "a.py").rename(root / "stage" / "renamed.py")
    assert version() != before


def test_bytecode_caches_are_ignored(root: Path) -> None:
    before = version()
    cache = root / "stage" / "sub" / "__pycache__"
    cache.mkdir()
    (cache / "b.cpython-311.pyc").write_bytes(b"\x00compiled")
    assert version() == before


def test_files_outside_the_listed_paths_are_ignored(root: Path) -> None:
    before = version()
    (root / "README.md").write_text("docs\n")
    (root / "tasks" / "other.py").write_text("O = 1\n")
    assert version() == before


def test_a_missing_listed_path_fails_loudly(root: Path) -> None:
    # A typo in the list must not silently drop a file from the key.
    with pytest.raises(FileNotFoundError):
        code_version("stage", "tasks/typo.py")


# ---- package versions --------------------------------------------------------------------


def fake_distribution(site: Path, name: str, version_text: str) -> Path:
    # dist-info folders use the normalized name (PEP 427): dashes become underscores.
    dist = site / f"{name.replace('-', '_')}-{version_text}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version_text}\n"
    )
    return site


def test_changes_when_a_package_is_upgraded(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_site = fake_distribution(tmp_path / "old", "shipyard-fake-dep", "1.0")
    new_site = fake_distribution(tmp_path / "new", "shipyard-fake-dep", "1.1")
    monkeypatch.syspath_prepend(str(old_site))
    assert metadata.version("shipyard-fake-dep") == "1.0"
    before = version(("shipyard-fake-dep",))
    assert version(("shipyard-fake-dep",)) == before
    monkeypatch.setattr(sys, "path", [str(new_site), *[p for p in sys.path if p != str(old_site)]])
    assert metadata.version("shipyard-fake-dep") == "1.1"
    assert version(("shipyard-fake-dep",)) != before


def test_changes_when_the_package_list_changes(root: Path) -> None:
    none = version()
    one = version(("pyyaml",))
    two = version(("pyyaml", "pytest"))
    assert len({none, one, two}) == 3
    assert version(("pytest", "pyyaml")) == two  # order-independent


def test_an_uninstalled_package_fails_loudly(root: Path) -> None:
    with pytest.raises(metadata.PackageNotFoundError):
        version(("shipyard-no-such-distribution",))


# ---- the repository's cached tasks -------------------------------------------------------

FIRST_PARTY = set(SHIPPED_PACKAGES)


def _module_file(module: str) -> Path | None:
    base = PROJECT_ROOT / module.replace(".", "/")
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _first_party_closure(start: Path) -> set[Path]:
    """Every first-party file `start` imports, transitively (static, function-level too)."""
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            for name in names:
                parts = name.split(".")
                if parts[0] not in FIRST_PARTY:
                    continue
                for end in range(1, len(parts) + 1):
                    found = _module_file(".".join(parts[:end]))
                    if found is not None:
                        todo.append(found)
    return seen


def _listed_paths(task_module: Path) -> list[str]:
    """The paths passed to `code_version(...)` in a task module (string literals and *COMMON)."""
    for node in ast.walk(ast.parse(task_module.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "code_version":
            paths: list[str] = []
            for arg in node.args:
                if isinstance(arg, ast.Starred) and getattr(arg.value, "id", None) == "COMMON":
                    paths.extend(COMMON)
                else:
                    assert isinstance(arg, ast.Constant), ast.unparse(arg)
                    paths.append(str(arg.value))
            return paths
    raise AssertionError(f"{task_module} has no code_version(...) call")


def _docstring_only(path: Path) -> bool:
    body = ast.parse(path.read_text()).body
    return all(isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant) for s in body)


CACHED_TASKS = sorted(
    p for p in (PROJECT_ROOT / "tasks").glob("*.py") if "code_version(" in p.read_text()
    and p.name != "caching.py"
)


def test_there_are_cached_tasks() -> None:
    assert {p.name for p in CACHED_TASKS} >= {"train.py", "validate.py"}


@pytest.mark.parametrize("task_module", CACHED_TASKS, ids=lambda p: p.name)
def test_cache_version_covers_every_module_the_task_imports(task_module: Path) -> None:
    # An edit to an imported module that is not in the list would be served from a stale
    # cache. Package __init__ files holding only a docstring cannot change behaviour.
    listed = _listed_paths(task_module)
    uncovered = sorted(
        path.relative_to(PROJECT_ROOT).as_posix()
        for path in _first_party_closure(task_module)
        if not any(path.relative_to(PROJECT_ROOT).as_posix() == rel
                   or path.is_relative_to(PROJECT_ROOT / rel) for rel in listed)
        and not (path.name == "__init__.py" and _docstring_only(path))
    )
    assert uncovered == [], f"{task_module.name}: code_version misses {uncovered}"


def test_repository_versions_are_stable() -> None:
    assert code_version(*COMMON) == code_version(*COMMON)
