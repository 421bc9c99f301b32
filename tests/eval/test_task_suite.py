"""The shipped task data: reproducible from the held-out split, and what each task claims."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from eval.suite.build import (
    DEFAULT_SOURCE,
    MANIFEST_NAME,
    SHIPPED_DATA_DIR,
    load_items,
    source_digest,
    write_task_data,
)
from eval.suite.specs import BUILT_TASKS, prepare_suite

pytestmark = pytest.mark.unit


def test_shipped_data_is_the_deterministic_build_of_the_eval_split(tmp_path: Path) -> None:
    write_task_data(load_items(DEFAULT_SOURCE), tmp_path)
    for name in [*(f"{t}.jsonl" for t in BUILT_TASKS), MANIFEST_NAME]:
        assert (tmp_path / name).read_bytes() == (SHIPPED_DATA_DIR / name).read_bytes(), (
            f"{name} differs from a fresh build: run `python -m eval.suite.build`")


def test_manifest_digests_match_the_files() -> None:
    manifest = json.loads((SHIPPED_DATA_DIR / MANIFEST_NAME).read_text())
    for task, entry in manifest["files"].items():
        data = (SHIPPED_DATA_DIR / f"{task}.jsonl").read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert data.count(b"\n") == entry["rows"]


def test_multiple_choice_items_are_well_formed_and_gold_positions_vary() -> None:
    for task in ("shipyard_mc", "shipyard_scoring_check"):
        rows = [json.loads(line) for line in
                (SHIPPED_DATA_DIR / f"{task}.jsonl").read_text().splitlines()]
        for row in rows:
            assert len(row["choices"]) == len(set(row["choices"])) == 4
        positions = {row["gold"] for row in rows}
        # A scorer that always picks one position must land near chance, not at 100%.
        assert positions == {0, 1, 2, 3}, task


def test_scoring_check_distractors_are_much_longer_than_the_reference() -> None:
    rows = [json.loads(line) for line in
            (SHIPPED_DATA_DIR / "shipyard_scoring_check.jsonl").read_text().splitlines()]
    for row in rows:
        gold = row["choices"][row["gold"]]
        assert all(len(c) >= 2 * len(gold) for i, c in enumerate(row["choices"])
                   if i != row["gold"])


def test_validated_dataset_copy_is_recognised_as_the_shipped_source(tmp_path: Path) -> None:
    # validate_data writes columns id/prompt/response: same rows, same source digest.
    rows = [json.loads(line) for line in DEFAULT_SOURCE.read_text().splitlines()]
    copy = tmp_path / "eval.jsonl"
    copy.write_text("".join(json.dumps({"id": r["id"], "prompt": r["instruction"],
                                        "response": r["response"]}) + "\n" for r in rows))
    assert source_digest(load_items(copy)) == source_digest(load_items(DEFAULT_SOURCE))
    suite = prepare_suite(tmp_path / "suite", ["shipyard_scoring_check"], bos_token="<s>",
                          max_gen_tokens=8, eval_split=copy)
    assert suite.shipped and suite.data_dir == SHIPPED_DATA_DIR


def test_other_held_out_data_gets_its_own_task_files(tmp_path: Path) -> None:
    split = tmp_path / "eval.jsonl"
    split.write_text("".join(json.dumps({"id": f"add-{i}", "prompt": f"What is {i} + 1?",
                                         "response": str(i + 1)}) + "\n" for i in range(12)))
    suite = prepare_suite(tmp_path / "suite", ["shipyard_scoring_check", "shipyard_mc"],
                          bos_token="<s>", max_gen_tokens=8, eval_split=split)
    assert not suite.shipped
    mc = (suite.data_dir / "shipyard_mc.jsonl").read_text().splitlines()
    assert len(mc) == 12 and "What is 3 + 1?" in mc[3]


def test_rendered_yaml_points_at_absolute_data_and_carries_versions(tmp_path: Path) -> None:
    suite = prepare_suite(tmp_path, list(BUILT_TASKS), bos_token='<"s">', max_gen_tokens=7)
    for task in BUILT_TASKS:
        config = yaml.safe_load((suite.include_dir / f"{task}.yaml").read_text())
        data_file = Path(config["dataset_kwargs"]["data_files"]["test"])
        assert data_file.is_absolute() and data_file.is_file()
        assert str(config["metadata"]["version"]) == suite.versions[task] == "1.0"
        assert suite.data_digests[task] == hashlib.sha256(data_file.read_bytes()).hexdigest()
    exact = yaml.safe_load((suite.include_dir / "shipyard_exact.yaml").read_text())
    assert exact["doc_to_text"].startswith('<"s">')  # quotes survive YAML escaping
    assert exact["generation_kwargs"]["max_gen_toks"] == 7
