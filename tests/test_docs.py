"""The docs stay true to the code: every error code raised is on docs/troubleshooting.md, every
code on that page is still raised, and the README's links point at files that exist.

Codes are collected from the source the way a reader would grep them, but with the AST so a
code passed through a variable, a helper's parameter or an f-string is found too:

- the first argument (or ``code=``) of every ``StageError(...)``, ``RegistryError(...)``,
  ``EvalError(...)`` call (and of subclasses of these) in the stage packages;
- a string literal is the code; a conditional expression gives both branches;
- a name is resolved to a module constant, or, when it is a parameter of the enclosing
  function, to the arguments every call of that function passes for it; any other local
  name to the UPPER_SNAKE string literals of the enclosing function;
- an f-string becomes a pattern (``f"DEPLOY_{x}_FAILED"`` -> ``DEPLOY_[A-Z0-9_]+_FAILED``)
  that at least one code on the page must match;
- ``exc.code`` re-raises a code raised elsewhere and is skipped.

Anything else cannot be checked, and the test says where it is.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from common.settings import SHIPPED_PACKAGES

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = tuple(p for p in SHIPPED_PACKAGES if p != "testing")  # test helpers: no codes
ERROR_TYPES = frozenset({"StageError", "RegistryError", "EvalError"})
TROUBLESHOOTING = ROOT / "docs" / "troubleshooting.md"

CODE_SHAPE = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$")
# A documented code is a heading holding just the code: "### `DEPLOY_ENGINE_UNKNOWN`".
DOC_HEADING = re.compile(r"^#{2,4} `([A-Z][A-Z0-9_]+)`\s*$", re.MULTILINE)


@dataclass
class RaisedCodes:
    codes: dict[str, set[str]] = field(default_factory=dict)  # code -> {"path:line", ...}
    patterns: dict[str, set[str]] = field(default_factory=dict)  # regex -> locations
    unresolved: list[str] = field(default_factory=list)  # "path:line: expression"


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _parse(root: Path, packages: tuple[str, ...]) -> dict[str, ast.Module]:
    trees: dict[str, ast.Module] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            trees[path.relative_to(root).as_posix()] = ast.parse(path.read_text(), str(path))
    return trees


def _error_types(trees: dict[str, ast.Module]) -> set[str]:
    """The three error types and every class derived from them, to a fixpoint."""
    types = set(ERROR_TYPES)
    changed = True
    while changed:
        changed = False
        for tree in trees.values():
            for node in ast.walk(tree):
                if (isinstance(node, ast.ClassDef) and node.name not in types
                        and any(_name(base) in types for base in node.bases)):
                    types.add(node.name)
                    changed = True
    return types


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}


def _enclosing_function(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> ast.AST | None:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            return node
    return None


def _code_argument(call: ast.Call) -> ast.expr | None:
    if call.args and not isinstance(call.args[0], ast.Starred):
        return call.args[0]
    return next((k.value for k in call.keywords if k.arg == "code"), None)


def _module_constants(tree: ast.Module, name: str) -> list[str]:
    values = []
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) and node.value else [])
        value = getattr(node, "value", None)
        if any(isinstance(t, ast.Name) and t.id == name for t in targets) and isinstance(
                value, ast.Constant) and isinstance(value.value, str):
            values.append(value.value)
    return values


def _fstring_pattern(node: ast.JoinedStr) -> str:
    parts = []
    for value in node.values:
        if isinstance(value, ast.Constant):
            parts.append(re.escape(str(value.value)))
        else:
            parts.append("[A-Z0-9_]+")
    return "^" + "".join(parts) + "$"


class _Collector:
    def __init__(self, root: Path, packages: tuple[str, ...]) -> None:
        self.trees = _parse(root, packages)
        self.parents = {path: _parents(tree) for path, tree in self.trees.items()}
        self.types = _error_types(self.trees)
        self.result = RaisedCodes()

    def run(self) -> RaisedCodes:
        for path, tree in self.trees.items():
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and _name(node.func) in self.types:
                    argument = _code_argument(node)
                    where = f"{path}:{node.lineno}"
                    if argument is None:
                        self.result.unresolved.append(f"{where}: no code argument")
                    else:
                        self._resolve(argument, path, where, depth=0)
        return self.result

    def _add(self, code: str, where: str) -> None:
        self.result.codes.setdefault(code, set()).add(where)

    def _resolve(self, node: ast.expr, path: str, where: str, depth: int) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            self._add(node.value, where)
        elif isinstance(node, ast.IfExp):
            self._resolve(node.body, path, where, depth)
            self._resolve(node.orelse, path, where, depth)
        elif isinstance(node, ast.JoinedStr):
            self.result.patterns.setdefault(_fstring_pattern(node), set()).add(where)
        elif isinstance(node, ast.Attribute) and node.attr == "code":
            return  # re-raise of a caught error: its code is raised (and collected) elsewhere
        elif isinstance(node, ast.Name) and depth < 5:
            self._resolve_name(node, path, where, depth)
        else:
            self.result.unresolved.append(f"{where}: {ast.unparse(node)}")

    def _resolve_name(self, node: ast.Name, path: str, where: str, depth: int) -> None:
        constants = _module_constants(self.trees[path], node.id)
        if constants:
            for value in constants:
                self._add(value, where)
            return
        function = _enclosing_function(node, self.parents[path])
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            params = [a.arg for a in function.args.posonlyargs + function.args.args]
            keyword_only = [a.arg for a in function.args.kwonlyargs]
            if node.id in params or node.id in keyword_only:
                if self._resolve_parameter(function, node.id, params, depth):
                    return
            else:
                literals = [n.value for n in ast.walk(function) if isinstance(n, ast.Constant)
                            and isinstance(n.value, str) and CODE_SHAPE.match(n.value)]
                for value in literals:
                    self._add(value, where)
                if literals:
                    return
        self.result.unresolved.append(f"{where}: {node.id}")

    def _resolve_parameter(self, function: ast.FunctionDef | ast.AsyncFunctionDef, param: str,
                           params: list[str], depth: int) -> bool:
        """Resolve a helper's `code` parameter through every call of the helper."""
        offset = 1 if params and params[0] in ("self", "cls") else 0
        position = params.index(param) - offset if param in params else None
        found = False
        for path, tree in self.trees.items():
            for call in ast.walk(tree):
                if not (isinstance(call, ast.Call) and _name(call.func) == function.name):
                    continue
                argument = next((k.value for k in call.keywords if k.arg == param), None)
                if argument is None and position is not None and 0 <= position < len(call.args):
                    argument = call.args[position]
                if argument is not None:
                    found = True
                    self._resolve(argument, path, f"{path}:{call.lineno}", depth + 1)
        return found


def raised_codes(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> RaisedCodes:
    return _Collector(root, packages).run()


def documented_codes(text: str) -> list[str]:
    return DOC_HEADING.findall(text)


def _sections(text: str) -> dict[str, str]:
    """code -> the text under its heading, up to the next heading."""
    matches = list(DOC_HEADING.finditer(text))
    sections = {}
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[match.end():end]
        body = re.split(r"^#{1,4} ", body, maxsplit=1, flags=re.MULTILINE)[0]
        sections[match.group(1)] = body
    return sections


# --- the checks -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def raised() -> RaisedCodes:
    return raised_codes()


@pytest.fixture(scope="module")
def page() -> str:
    return TROUBLESHOOTING.read_text()


def test_every_raised_code_can_be_read_from_the_source(raised: RaisedCodes) -> None:
    assert not raised.unresolved, (
        "these raises pass an error code the docs test cannot resolve; pass a string literal "
        "(or a module constant) so the code can be documented:\n  "
        + "\n  ".join(raised.unresolved))
    assert "DEPLOY_ENGINE_UNKNOWN" in raised.codes  # the collector sees the stage packages


def test_every_raised_code_is_on_the_troubleshooting_page(raised: RaisedCodes, page: str) -> None:
    documented = set(documented_codes(page))
    missing = {code: sorted(where) for code, where in raised.codes.items()
               if code not in documented}
    assert not missing, (
        f"error codes raised in the code but not documented in {TROUBLESHOOTING.name} "
        "(add a '### `CODE`' heading with its meaning and fix):\n  "
        + "\n  ".join(f"{code}  (raised at {', '.join(where)})"
                      for code, where in sorted(missing.items())))
    unmatched = {pattern: sorted(where) for pattern, where in raised.patterns.items()
                 if not any(re.match(pattern, code) for code in documented)}
    assert not unmatched, (
        "codes built by f-strings that match no documented code:\n  "
        + "\n  ".join(f"{p}  (raised at {', '.join(w)})" for p, w in sorted(unmatched.items())))


def test_every_documented_code_is_still_raised(raised: RaisedCodes, page: str) -> None:
    stale = sorted(code for code in set(documented_codes(page))
                   if code not in raised.codes
                   and not any(re.match(p, code) for p in raised.patterns))
    assert not stale, (
        f"{TROUBLESHOOTING.name} documents codes no code raises any more; remove them: {stale}")


def test_each_code_is_documented_once_with_a_fix(page: str) -> None:
    codes = documented_codes(page)
    duplicates = sorted({c for c in codes if codes.count(c) > 1})
    assert not duplicates, f"documented more than once: {duplicates}"
    without_fix = sorted(code for code, body in _sections(page).items() if "**Fix" not in body)
    assert not without_fix, f"codes documented without a '**Fix**' paragraph: {without_fix}"


def test_the_collector_follows_variables_helpers_and_fstrings(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "mod.py").write_text(
        "from common.errors import StageError\n"
        "MODULE_CODE = 'PKG_MODULE_CONSTANT'\n"
        "class PkgError(StageError): pass\n"
        "def fail(code, message):\n"
        "    return StageError(code, message)\n"
        "def run(kind, ok):\n"
        "    raise fail('PKG_VIA_HELPER', 'x')\n"
        "def other(kind, ok):\n"
        "    code = 'PKG_LOCAL_A' if ok else 'PKG_LOCAL_B'\n"
        "    raise StageError(code, 'x')\n"
        "def more(kind, ok):\n"
        "    raise PkgError(MODULE_CODE, 'x')\n"
        "def fmt(kind):\n"
        "    raise StageError(f'PKG_{kind.upper()}_FAILED', 'x')\n"
        "def both(ok):\n"
        "    raise StageError('PKG_YES' if ok else 'PKG_NO', 'x')\n"
        "def reraise(exc):\n"
        "    raise StageError(exc.code, exc.message)\n"
        "def opaque(table):\n"
        "    raise StageError(table['k'], 'x')\n"
    )
    found = raised_codes(tmp_path, ("pkg",))
    assert set(found.codes) == {"PKG_MODULE_CONSTANT", "PKG_VIA_HELPER", "PKG_LOCAL_A",
                                "PKG_LOCAL_B", "PKG_YES", "PKG_NO"}
    assert list(found.patterns) == ["^PKG_[A-Z0-9_]+_FAILED$"]
    assert [u.split(": ", 1)[1] for u in found.unresolved] == ["table['k']"]


# -- links and paths: README.md and docs/**/*.md ------------------------------------------------
DOC_PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCED = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
MD_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
MD_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
BACKTICKED = re.compile(r"`([^`\s]+)`")
# Top-level folders and files of this repository: a backticked word starting with one is a path.
REPO_TOP = ("bench/", "cli/", "common/", "configs/", "data/", "deploy/", "docs/", "eval/",
            "infra/", "registry/", "requirements/", "serving/", "tasks/", "testing/", "tests/",
            "training/", "workflows/", ".github/", "Makefile", "pyproject.toml", "mkdocs.yml")
# Backticked words shaped like repo paths that are not files of this repository, with why.
NOT_REPO_PATHS = {
    "deploy/decision_record.json": "an MLflow artifact path of the deploy run",
    "deploy/report.html": "an MLflow artifact path of the deploy run",
}
# Architecture decision records describe the layout they replaced: old paths are their point.
HISTORICAL_PAGES = ("docs/adr/",)


def _prose(page: Path) -> str:
    return FENCED.sub("", page.read_text())


def _slugs(heading: str) -> set[str]:
    """The anchors a heading gets: GitHub's rule and mkdocs' (python-markdown toc)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>|`|\*", "", text)
    github = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
    mkdocs = re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", text).strip().lower())
    return {github, mkdocs}


def _anchors(page: Path) -> set[str]:
    text = _prose(page)
    found = {slug for heading in MD_HEADING.findall(text) for slug in _slugs(heading)}
    return found | set(re.findall(r"""id=["']([^"']+)["']""", text))


def dead_links(pages: list[Path], root: Path) -> list[str]:
    """`page: target` for each relative link whose file, or #anchor's heading, is missing."""
    dead = []
    for page in pages:
        for target in MD_LINK.findall(_prose(page)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue  # https:, mailto:: not ours to check offline
            path, _, anchor = target.partition("#")
            destination = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(root)}: {target}"
            missing_heading = bool(anchor) and destination.suffix == ".md" and (
                anchor not in _anchors(destination))
            if not destination.exists() or missing_heading:
                dead.append(where)
    return dead


def dead_paths(pages: list[Path], root: Path) -> list[str]:
    """`page: path` for each backticked repository path (`registry/verify.py`,
    `cli/main.py:build_parser`) that does not exist."""
    dead = []
    for page in pages:
        name = page.relative_to(root).as_posix()
        if name.startswith(HISTORICAL_PAGES):
            continue
        for word in BACKTICKED.findall(_prose(page)):
            path = re.split(r"[:(]", word, maxsplit=1)[0].rstrip(".,")
            if (not path.startswith(REPO_TOP) or path in NOT_REPO_PATHS
                    or re.search(r"[*<>{}$\[\]|]|\.\.\.", path)):
                continue  # not a path, or a pattern (`reports/<run-id>/`, `*.md`)
            if not (root / path).exists():
                dead.append(f"{name}: {word}")
    return dead


def test_internal_links_and_anchors_resolve() -> None:
    dead = dead_links(DOC_PAGES, ROOT)
    assert not dead, f"links to files or headings that do not exist: {dead}"


def test_backticked_repository_paths_exist() -> None:
    dead = dead_paths(DOC_PAGES, ROOT)
    assert not dead, f"docs name files that do not exist: {dead}"


def test_code_refers_to_readme_sections_that_exist() -> None:
    """A comment like `see the README, "Stage: evaluate"` is a link too."""
    headings = set(MD_HEADING.findall(_prose(ROOT / "README.md")))
    dead = [f"{path.relative_to(ROOT)}: {section!r}"
            for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
            for section in re.findall(r"README(?:\.md)?[,:]\s*\"([^\"\n]+)\"",
                                      path.read_text())
            if section not in headings]
    assert not dead, f"code points at README sections that do not exist: {dead}"


def test_the_link_and_path_checks_find_what_is_dead(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "cli").mkdir()
    (tmp_path / "cli" / "main.py").write_text("")
    (tmp_path / "docs" / "b.md").write_text("# Exit codes\n\n## `DEPLOY_NOT_FOUND`\n")
    page = tmp_path / "docs" / "a.md"
    page.write_text(
        "[ok](b.md#exit-codes) [ok](b.md#deploy_not_found) [ok](#a) [web](https://x.org/y)\n"
        "[gone](c.md) [no heading](b.md#phases) [no anchor here](#nowhere)\n\n# A\n\n"
        "`cli/main.py:build_parser` `cli/gone.py` `reports/<run-id>/` `--json`\n"
        "```\n[in a code block](missing.md) `cli/in_code.py`\n```\n")
    assert dead_links([page], tmp_path) == [
        "docs/a.md: c.md", "docs/a.md: b.md#phases", "docs/a.md: #nowhere"]
    assert dead_paths([page], tmp_path) == ["docs/a.md: cli/gone.py"]


# Each stage page documents every field of the stage's config dataclass, one table row each.
CONFIG_PAGES = {
    ("data/config.py", "DataConfig"): "stages/validate_data.md",
    ("training/config.py", "TrainConfig"): "stages/train.md",
    ("eval/config.py", "EvalConfig"): "stages/evaluate.md",
    ("registry/config.py", "RegisterConfig"): "stages/register.md",
    ("deploy/config.py", "DeployConfig"): "stages/deploy_canary.md",
    ("common/cost.py", "CostConfig"): "cost.md",  # prices of every stage
}


def _dataclass_fields(path: Path, name: str, prefix: str = "") -> list[str]:
    """Field names of class `name`; a field typed as another class of the same file, or one
    imported from a module of the repository (`eval/config_gate.py:GateConfig`), is a nested
    section, listed as its own fields under a dotted prefix (`judge.min_kappa`)."""
    tree = ast.parse(path.read_text())
    classes = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    imported = {alias.asname or alias.name: ROOT / (n.module.replace(".", "/") + ".py")
                for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
                for alias in n.names}
    out = []
    for statement in classes[name].body:
        if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
            continue
        field_name = statement.target.id
        hint = statement.annotation
        if isinstance(hint, ast.Name) and hint.id in classes:
            out += _dataclass_fields(path, hint.id, f"{prefix}{field_name}.")
        elif (isinstance(hint, ast.Name) and hint.id in imported
              and imported[hint.id].is_file() and f"class {hint.id}" in
              imported[hint.id].read_text()):
            out += _dataclass_fields(imported[hint.id], hint.id, f"{prefix}{field_name}.")
        else:
            out.append(prefix + field_name)
    return out


@pytest.mark.parametrize(("source", "page"), [(k, v) for k, v in CONFIG_PAGES.items()],
                         ids=[v for v in CONFIG_PAGES.values()])
def test_every_config_field_is_on_its_stage_page(source: tuple[str, str], page: str) -> None:
    path, name = source
    text = (ROOT / "docs" / page).read_text()
    section = re.search(r"^## Configuration.*?(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert section, f"docs/{page} has no '## Configuration' section"
    rows = set(re.findall(r"^\| `([a-z0-9_.]+)` \|", section.group(0), re.MULTILINE))
    fields = _dataclass_fields(ROOT / path, name)
    missing = [f for f in fields if f not in rows]
    assert not missing, f"docs/{page} has no table row for {name} field(s) {missing}"
    stale = sorted(rows - set(fields))
    assert not stale, f"docs/{page} documents {name} fields that no longer exist: {stale}"
