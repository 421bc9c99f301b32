"""common/layout.py: the one owner of the SHIPYARD_HOME layout."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from common.layout import ENTRIES, HomeLayout
from common.settings import PROJECT_ROOT, SHIPPED_PACKAGES, load_settings

pytestmark = pytest.mark.unit

# Packages whose code may touch SHIPYARD_HOME (bench/ and tests/ build their own homes).
_SOURCE_DIRS = SHIPPED_PACKAGES
# Modules still joining a home entry themselves (none left; keep the set for the next one
# moved in, and empty it again).
_NOT_YET: set[str] = set()


def test_the_layout_lists_every_entry_and_every_path_is_one_of_them(tmp_path: Path) -> None:
    layout = HomeLayout(tmp_path)
    paths = {name: getattr(layout, name) for name in dir(HomeLayout)
             if isinstance(getattr(HomeLayout, name), property)}
    tops = {path.relative_to(tmp_path).parts[0] for path in paths.values()}
    assert tops == set(ENTRIES)
    assert layout.run_reports_dir("r1") == tmp_path / "reports" / "r1"
    assert layout.deployment_dir("demo") == tmp_path / "deployments" / "demo"
    assert layout.engine_logs_dir == tmp_path / "logs" / "engines"


def test_settings_place_mlflow_and_their_shortcuts_by_the_layout(tmp_path: Path) -> None:
    settings = load_settings({"SHIPYARD_HOME": str(tmp_path)})
    layout = HomeLayout(tmp_path.resolve())
    assert settings.layout == layout
    assert settings.mlflow_tracking_uri == f"sqlite:///{layout.mlflow_db}"
    assert settings.mlflow_artifact_root == layout.mlartifacts_dir
    assert (settings.reports_dir, settings.checkpoints_dir, settings.keys_dir) == (
        layout.reports_dir, layout.checkpoints_dir, layout.keys_dir)


def test_the_user_guide_lists_the_whole_layout() -> None:
    text = (PROJECT_ROOT / "docs" / "getting-started.md").read_text()
    section = text.split("## Where state lives", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`([a-z.-]+)/?`", section))
    assert set(ENTRIES) <= listed, set(ENTRIES) - listed


def test_no_module_but_the_layout_joins_a_home_entry_itself() -> None:
    # `home / "keys"`, `settings.home / "logs"`: a deployment's own logs/ is not the home's
    names = "|".join(map(re.escape, ENTRIES))
    joined = re.compile(rf"""home\)? */ *["']({names})["']""")
    offenders = [
        f"{path.relative_to(PROJECT_ROOT)}:{number}"
        for folder in _SOURCE_DIRS for path in sorted((PROJECT_ROOT / folder).rglob("*.py"))
        if path.relative_to(PROJECT_ROOT).as_posix() not in {"common/layout.py", *_NOT_YET}
        for number, line in enumerate(path.read_text().splitlines(), 1) if joined.search(line)
    ]
    assert offenders == []
