"""Disk retention: the selection rules (property-tested), and each stage's pruning over a
real directory: deploy's model copies, the eval cache, the eval work directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common import retention
from common.errors import StageError
from common.retention import Entry, select_keep_newest, select_under_bytes
from deploy.config import DeployConfig
from deploy.stage import prune_model_copies
from eval.cache import prune_eval_cache
from eval.config import EvalConfig
from eval.errors import EvalError
from eval.run import remove_all_but

pytestmark = pytest.mark.unit

# -- the rules, as properties ----------------------------------------------------------------

_entries = st.lists(
    st.tuples(st.integers(0, 10_000), st.integers(0, 50)), max_size=25,
).map(lambda rows: [Entry(Path(f"/x/{i}"), size, float(newness))
                    for i, (size, newness) in enumerate(rows)])


@st.composite
def _entries_and_protected(draw: st.DrawFn) -> tuple[list[Entry], set[Path]]:
    entries = draw(_entries)
    protected = {e.path for e in entries if draw(st.booleans())} if entries else set()
    return entries, protected


def _after(entries: list[Entry], removed: list[Entry]) -> list[Entry]:
    gone = {e.path for e in removed}
    return [e for e in entries if e.path not in gone]


@settings(max_examples=300, deadline=None)
@given(_entries_and_protected(), st.integers(0, 30))
def test_keep_newest_never_removes_a_protected_path_and_keeps_the_newest(
    case: tuple[list[Entry], set[Path]], keep: int,
) -> None:
    entries, protected = case
    removed = select_keep_newest(entries, keep, protected)
    assert not {e.path for e in removed} & protected
    remaining = _after(entries, removed)
    assert len([e for e in remaining if e.path not in protected]) <= keep
    assert len(remaining) >= min(keep, len(entries))  # never removes more than it must
    if removed and remaining:  # everything removed is older than, or tied with, what stays
        newest_removed = max(e.newness for e in removed)
        kept_unprotected = [e.newness for e in remaining if e.path not in protected]
        assert all(n >= newest_removed for n in kept_unprotected)
    # idempotent: a second pass over what is left removes nothing
    assert select_keep_newest(remaining, keep, protected) == []


@settings(max_examples=300, deadline=None)
@given(_entries_and_protected(), st.integers(0, 100_000))
def test_under_bytes_never_removes_a_protected_path_and_meets_the_bound(
    case: tuple[list[Entry], set[Path]], max_bytes: int,
) -> None:
    entries, protected = case
    removed = select_under_bytes(entries, max_bytes, protected)
    assert not {e.path for e in removed} & protected
    remaining = _after(entries, removed)
    total = sum(e.size_bytes for e in remaining)
    # the bound holds, unless only protected entries are left to exceed it
    assert total <= max_bytes or all(e.path in protected for e in remaining)
    if removed:  # nothing removed that was not needed: without the last one it was over
        assert total + removed[-1].size_bytes > max_bytes
    assert select_under_bytes(remaining, max_bytes, protected) == []


def test_under_bytes_removes_the_least_recently_used_first() -> None:
    entries = [Entry(Path("/new"), 10, 3.0), Entry(Path("/old"), 10, 1.0),
               Entry(Path("/mid"), 10, 2.0)]
    assert [e.path.name for e in select_under_bytes(entries, 15)] == ["old", "mid"]
    assert [e.path.name for e in select_under_bytes(entries, 15, {Path("/old")})] == \
        ["mid", "new"]


def test_negative_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        select_keep_newest([], -1)
    with pytest.raises(ValueError):
        select_under_bytes([], -1)


def test_prune_reports_and_dry_run_removes_nothing(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"d{i}").mkdir()
        (tmp_path / f"d{i}" / "f").write_bytes(b"x" * 10)
        os.utime(tmp_path / f"d{i}" / "f", (i, i))
    entries = retention.scan(retention.children(tmp_path, include=lambda p: p.name[0] == "d"))
    dry = retention.prune_keep_newest(entries, 1, dry_run=True)
    assert dry.removed == [tmp_path / "d1", tmp_path / "d0"] and dry.freed_bytes == 20
    assert all((tmp_path / f"d{i}").exists() for i in range(3))
    done = retention.prune_keep_newest(entries, 1)
    assert done.removed == dry.removed and done.kept == [tmp_path / "d2"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name[0] == "d") == ["d2"]


# -- deploy: verified model copies -------------------------------------------------------------

def _copy(models: Path, version: int, size: int = 100) -> None:
    (models / f"v{version}" / "model").mkdir(parents=True)
    (models / f"v{version}" / "model" / "model.safetensors").write_bytes(b"w" * size)


def test_model_copies_keep_stable_canary_and_the_newest_n(tmp_path: Path) -> None:
    models = tmp_path / "models"
    for version in (1, 2, 3, 4, 10, 11):
        _copy(models, version)
    (models / "v12.verifying").mkdir()  # a deploy verifying right now: not a copy
    result = prune_model_copies(tmp_path, 2, protected_versions=["1", "3"])
    assert sorted(p.name for p in result.removed) == ["v2", "v4"]
    assert sorted(p.name for p in models.iterdir()) == ["v1", "v10", "v11", "v12.verifying",
                                                         "v3"]
    assert prune_model_copies(tmp_path, 2, protected_versions=["1", "3"]).removed == []
    assert prune_model_copies(tmp_path / "nothing-here", 2).removed == []


def test_keep_model_copies_is_a_deploy_setting_checked_early() -> None:
    assert DeployConfig().keep_model_copies == 2
    with pytest.raises(StageError) as info:
        DeployConfig(keep_model_copies=-1)
    assert info.value.code == "CONFIG_INVALID" and "keep_model_copies" in info.value.message


# -- eval: the response + judge cache, and the work directory ----------------------------------

def test_eval_cache_is_bounded_lru_and_spares_the_models_in_use(tmp_path: Path) -> None:
    cache = tmp_path / "eval-cache"
    for age, digest in enumerate(["aa", "bb", "cc"]):  # aa oldest
        (cache / digest / "hf").mkdir(parents=True)
        db = cache / digest / "hf" / "responses_rank0.db"
        db.write_bytes(b"r" * 1000)
        os.utime(db, (1000 + age, 1000 + age))
        os.utime(cache / digest, (1000 + age, 1000 + age))
        os.utime(cache / digest / "hf", (1000 + age, 1000 + age))
    judge = cache / "judge" / "ab"
    judge.mkdir(parents=True)
    (judge / "ab01.json").write_text("{}" * 50)  # 100 bytes, used now
    (judge / ".tmp-x.json").write_text("{}" * 500)  # being written: never touched
    # 3100 bytes of entries, bound 2200: aa is the oldest, but it is in use (marked used
    # now, protected), so bb goes
    result = prune_eval_cache(cache, 2200, in_use_digests=["aa"])
    assert sorted(p.name for p in result.removed) == ["bb"]
    result = prune_eval_cache(cache, 1500, in_use_digests=["aa"])
    assert sorted(p.name for p in result.removed) == ["cc"]
    assert (cache / "aa").is_dir() and (judge / "ab01.json").is_file()
    assert (judge / ".tmp-x.json").is_file()
    assert prune_eval_cache(cache, 1500, in_use_digests=["aa"]).removed == []


def test_cache_max_bytes_is_an_eval_setting_checked_early() -> None:
    assert EvalConfig().cache_max_bytes == 10 * 1024**3
    assert EvalConfig(cache_max_bytes=None).cache_max_bytes is None
    with pytest.raises(EvalError) as info:
        EvalConfig(cache_max_bytes=-1)
    assert info.value.code == "EVAL_CONFIG_INVALID"


def test_the_eval_work_dir_keeps_only_the_report(tmp_path: Path) -> None:
    work = tmp_path / "shipyard-eval-x"
    (work / "suite-abc" / "tasks").mkdir(parents=True)
    (work / "suite-abc" / "tasks" / "t.yaml").write_text("x")
    (work / "samples.jsonl").write_text("x")
    (work / "eval_report.json").write_text("{}")
    remove_all_but(work, keep=[work / "eval_report.json"])
    assert [p.name for p in work.iterdir()] == ["eval_report.json"]


def test_a_failed_evaluation_removes_its_work_dir(tmp_path: Path) -> None:
    from common.settings import load_settings
    from eval.run import evaluate_model

    split = tmp_path / "eval.jsonl"
    split.write_text('{"id": "e-0", "prompt": "q", "response": "a"}\n')
    work = tmp_path / "shipyard-eval-y"
    work.mkdir()
    (work / "partial-output.json").write_text("{}")
    with pytest.raises(EvalError):
        evaluate_model(model_dir=tmp_path / "model", model_digest="ab" * 32,
                       training_run_id="run", eval_split=split, eval_split_digest="0" * 64,
                       config=EvalConfig(), settings=load_settings(), work_dir=work)
    assert not work.exists()
