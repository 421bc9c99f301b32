"""The eval report shows base (champion) and fine-tune (candidate) side by side: answers of
the same documents, and each headline metric with the champion's value beside it."""

from __future__ import annotations

from typing import Any

import pytest

from eval.report import _generations_table, overview_facts, side_by_side

pytestmark = pytest.mark.unit


def _sample(doc_id: int, output: str, score: float) -> dict[str, Any]:
    return {"doc_id": doc_id, "doc_hash": f"h{doc_id}", "metrics": {"exact_match": score},
            "output": output}


def _report() -> dict[str, Any]:
    return {
        "gate_outcome": "PASS", "model": {"digest": "a" * 64}, "champion": {"digest": "b" * 64},
        "gate": {"mode": "champion", "checks": [{"name": "x", "passed": True, "detail": "d"}]},
        "summary": {"gate": "PASS", "mode": "champion", "shipyard_skill.exact_match": 0.9,
                    "shipyard_scoring_check.acc": 1.0},
        "champion_metrics": {"shipyard_skill": {"exact_match": 0.0}},
        "samples": {
            # candidate order differs from the champion's: pairing is by document id
            "candidate": {"shipyard_skill": [_sample(2, "[ERROR] db: down", 1.0),
                                             _sample(1, "[INFO] api: up", 1.0)],
                          "shipyard_scoring_check": [_sample(1, "", 1.0)]},
            "champion": {"shipyard_skill": [_sample(1, "The API is up.", 0.0),
                                            _sample(2, "Database down!", 0.0)]},
        },
    }


def test_generations_are_paired_by_document_and_only_for_generation_tasks() -> None:
    rows = side_by_side(_report())
    assert [(r["task"], r["doc_id"]) for r in rows] == [("shipyard_skill", 2),
                                                        ("shipyard_skill", 1)]
    assert rows[0]["champion_output"] == "Database down!"
    assert rows[0]["candidate_output"] == "[ERROR] db: down"
    assert (rows[0]["champion_score"], rows[0]["candidate_score"]) == (0.0, 1.0)
    html = _generations_table(_report())
    assert "Database down!" in html and "[ERROR] db: down" in html


def test_no_champion_shows_the_candidate_alone() -> None:
    report = _report()
    report["samples"]["champion"] = None
    rows = side_by_side(report)
    assert rows and all(r["champion_output"] is None for r in rows)


def test_overview_puts_the_champion_value_beside_each_headline_metric() -> None:
    facts = dict(overview_facts(_report()).facts)
    assert facts["shipyard_skill.exact_match"] == "0.9 (champion 0)"
    assert facts["shipyard_scoring_check.acc"] == "1"  # no champion value: candidate alone


def test_long_answers_are_cut_in_the_table_and_kept_whole_in_the_rows() -> None:
    report = _report()
    report["samples"]["candidate"]["shipyard_skill"][0]["output"] = "x" * 1000
    assert side_by_side(report)[0]["candidate_output"] == "x" * 1000
    assert "(1,000 characters)" in _generations_table(report)
