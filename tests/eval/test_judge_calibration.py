"""The judge earns its vote on human labels (LLMBar), or stays advisory with the numbers.

Scripted judges on a real loopback server: one that agrees with the annotators earns the
vote; one that always answers "A", one that always picks the longer answer and one that
answers at random are each caught by calibration and never gate.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from eval.config import EvalConfig, GateConfig, JudgeConfig
from eval.errors import EvalError
from eval.gate import decide
from eval.harness import HarnessResult, SampleResult
from eval.judge import llmbar
from eval.judge.client import CallPolicy, JudgeClient, JudgeEndpoint, JudgeReply
from eval.judge.human_calibration import (
    CalibrationCache,
    Statistics,
    calibrate_on_human,
    kappa_interval,
)
from eval.judge.jury import Jury, plurality
from eval.judge.prompts import load_prompt
from eval.judge.run import CALIBRATION_CACHE_DIR, run_judge
from testing.scripted_server import Reply, ScriptedServer
from tests.eval.judges import (
    always_a_judge,
    longer_answer_judge,
    random_judge,
    reference_judge,
)

pytestmark = pytest.mark.unit

PAIRWISE = load_prompt("pairwise", "v1")
STATS = Statistics(confidence=0.9, resamples=300, seed=7)
# Every subset, the first 20 pairs of each: 160 pairs, 320 calls (a second or two).
SUBSETS = list(llmbar.SUBSETS)
LIMIT = 20


def config(judge: dict[str, Any] | None = None, **overrides: Any) -> EvalConfig:
    judged: dict[str, Any] = {"base_url": "scripted", "calibration_limit_per_subset": LIMIT}
    return EvalConfig(**({"gate": GateConfig(bootstrap_resamples=300)} | overrides),
                      judge=JudgeConfig(**(judged | (judge or {}))))


def client(server: ScriptedServer, model: str = "scripted-judge",
           digest: str | None = None) -> JudgeClient:
    return JudgeClient(JudgeEndpoint(server.base_url, model, model_digest=digest),
                       CallPolicy(timeout_seconds=5.0, backoff_seconds=0.01, max_retries=1))


def calibrate(judge: JudgeClient | Jury, members: list[str] | None = None) -> Any:
    return calibrate_on_human(judge, PAIRWISE, SUBSETS, LIMIT, STATS, min_kappa=0.6,
                              min_order_agreement=0.75, jury_members=members or ())


def test_vendored_llmbar_is_complete_pinned_and_published_judges_sit_beside_it() -> None:
    sizes = {s: len(llmbar.load_subset(s)) for s in SUBSETS}
    assert sizes["natural"] == 100 and sizes["mt_bench"] == 200 and sizes["faireval"] == 66
    assert sizes["llmeval2"] == 200
    assert sum(sizes[s] for s in SUBSETS if s.startswith("adversarial")) == 319
    assert (llmbar.DATA_DIR / "LICENSE").read_text().startswith("MIT License")
    assert "900616bf" in (llmbar.DATA_DIR / "README.md").read_text()
    gpt4 = next(r for r in llmbar.reference_judges("natural")
                if r.judge == "GPT-4" and r.strategy == "Vanilla")
    assert gpt4.accuracy_average == pytest.approx(0.955)
    assert gpt4.accuracy_both_orders == pytest.approx(0.93)
    assert llmbar.reference_judges("mt_bench") == []  # LLMBar publishes no judge rows there


def test_an_edited_llmbar_file_is_refused_by_name(tmp_path: Path) -> None:
    data = tmp_path / "llmbar"
    shutil.copytree(llmbar.DATA_DIR, data)
    path = data / "LLMBar_Natural.json"
    records = json.loads(path.read_text())
    records[0]["label"] = 3 - int(records[0]["label"])  # one flipped human label
    path.write_text(json.dumps(records))
    with pytest.raises(EvalError, match=r"LLMBar_Natural\.json") as info:
        llmbar.load_subset("natural", 5, data_dir=data)
    assert info.value.code == "EVAL_JUDGE_DATA_DIGEST_MISMATCH"
    assert llmbar.load_subset("faireval", 2, data_dir=data)  # the other files still load
    (data / "Processed_FairEval.json").unlink()
    with pytest.raises(EvalError, match=r"Processed_FairEval\.json") as missing:
        llmbar.load_subset("faireval", 2, data_dir=data)
    assert missing.value.code == "EVAL_JUDGE_DATA_DIGEST_MISMATCH"


def test_a_judge_that_agrees_with_the_annotators_earns_the_vote() -> None:
    def slow_reference(path: str, request: dict, call: int) -> Reply:
        reply = reference_judge(path, request, call)
        reply.delay_seconds = 0.01  # long enough for calls to overlap
        return reply

    with ScriptedServer(slow_reference) as server:
        judge = client(server)
        result = calibrate(judge)
        # Both orders of every pair, all in one concurrent batch.
        assert server.num_requests == 2 * 8 * LIMIT and server.max_in_flight > 1
    assert result.passed and result.judge_kind == "judge" and result.jury_members == []
    assert result.kappa == pytest.approx(1.0) and result.order_agreement == 1.0
    assert result.accuracy == 1.0 and result.accuracy_both_orders == 1.0
    assert result.num_pairs == 160 and result.calls == 320
    assert result.label_source.startswith("LLMBar")
    natural = next(s for s in result.per_subset if s.subset == "natural")
    assert natural.num_pairs == LIMIT and natural.order_agreement == 1.0
    assert natural.kappa_interval_low <= 1.0 and natural.judge_labels.keys() <= {"1", "2"}
    assert any(r.judge == "GPT-4" for r in natural.reference_judges)


@pytest.mark.parametrize(("script", "caught_by"), [
    (always_a_judge, "order agreement"),
    (longer_answer_judge, "kappa"),
    (random_judge, "kappa"),
], ids=["always-A", "always-longer", "random"])
def test_biased_and_random_judges_are_caught_by_calibration_and_never_gate(
        script: Any, caught_by: str, tmp_path: Path) -> None:
    candidate, champion = samples(["2"] * 12, ["3"] * 12)
    with ScriptedServer(script) as server:
        report = run_judge(config(), JudgeEndpoint(server.base_url, "scripted-judge"),
                           candidate, champion, tmp_path)
    cal = report.calibration
    assert cal is not None and not cal.passed and not report.gating
    assert cal.kappa < 0.6 or cal.order_agreement < 0.75
    reason = next(r for r in report.non_gating_reasons if caught_by in r)
    # The reason carries the numbers and the floor it missed.
    assert ("eval.judge.min_kappa 0.6" in reason) if caught_by == "kappa" else (
        "eval.judge.min_order_agreement 0.75" in reason)
    decision = decide(config(tasks=["shipyard_scoring_check", "shipyard_exact"],
                             gate=GateConfig(bootstrap_resamples=300, non_inferiority_margins={})),
                      harness(candidate), harness(champion), report)
    assert all(c.name != "judge_win_rate" for c in decision.checks)
    assert any(n.startswith("judge non-gating: ") for n in decision.notes)


def test_biased_judges_numbers() -> None:
    # What each scripted judge scores on the human labels (pooled over the 160 pairs).
    with ScriptedServer(always_a_judge) as server:
        always_a = calibrate(client(server))
    with ScriptedServer(longer_answer_judge) as server:
        longer = calibrate(client(server))
    with ScriptedServer(random_judge) as server:
        rand = calibrate(client(server))
    assert always_a.order_agreement == 0.0 and always_a.kappa == pytest.approx(0.0)
    assert always_a.accuracy == 0.5 and always_a.accuracy_both_orders == 0.0
    assert longer.order_agreement > 0.95  # consistent, just wrong: only kappa catches it
    assert longer.kappa < 0.3
    # Adversarial pairs are built so the worse output looks better (often longer).
    gptinst = next(s for s in longer.per_subset if s.subset == "adversarial_gptinst")
    assert gptinst.kappa < 0
    assert abs(rand.kappa) < 0.2 and rand.order_agreement < 0.6


def test_calibration_runs_once_per_judge_and_a_bad_entry_is_a_miss(tmp_path: Path) -> None:
    candidate, champion = samples(["2"] * 3, ["3"] * 3)
    endpoint_of = lambda server, digest=None: JudgeEndpoint(  # noqa: E731
        server.base_url, "scripted-judge", model_digest=digest)
    with ScriptedServer(reference_judge) as server:
        first = run_judge(config(), endpoint_of(server), candidate, champion, tmp_path)
        calls = server.num_requests
        # Another evaluation with fresh verdict caches: the calibration is not re-run.
        shutil.rmtree(tmp_path / "judge", ignore_errors=True)
        for path in tmp_path.iterdir():
            if path.name != CALIBRATION_CACHE_DIR:
                shutil.rmtree(path)
        second = run_judge(config(), endpoint_of(server), candidate, champion, tmp_path)
        assert server.num_requests - calls < 2 * 8 * LIMIT  # no calibration calls
        assert first.calibration is not None and second.calibration is not None
        assert second.calibration.cached and not first.calibration.cached
        assert second.calibration.kappa == first.calibration.kappa
        # Stricter floors apply to the cached measurement too.
        strict = run_judge(config({"min_order_agreement": 1.0, "min_kappa": 1.0}),
                           endpoint_of(server), candidate, champion, tmp_path)
        assert strict.calibration is not None and strict.calibration.passed
        # Other weights under the same served name: another judge, calibrated again.
        before = server.num_requests
        run_judge(config(), endpoint_of(server, "sha256:other"), candidate, champion,
                  tmp_path)
        assert server.num_requests - before >= 2 * 8 * LIMIT
        # A malformed entry is a miss, not a crash and not a vote.
        (entry,) = [p for p in (tmp_path / CALIBRATION_CACHE_DIR).glob("*.json")
                    if json.loads(p.read_text())["calibration"]["judge_identity"]
                    == "scripted-judge"]
        broken = json.loads(entry.read_text())
        broken["calibration"]["kappa"] = "1.0"
        entry.write_text(json.dumps(broken))
        assert CalibrationCache(entry.parent).get(entry.stem) is None
        before = server.num_requests
        third = run_judge(config(), endpoint_of(server), candidate, champion, tmp_path)
        assert server.num_requests - before >= 2 * 8 * LIMIT
        assert third.calibration is not None and not third.calibration.cached
        assert third.calibration.kappa == pytest.approx(1.0)


def test_a_cached_calibration_is_another_endpoints_or_settings_miss(tmp_path: Path) -> None:
    # Two servers, one served name and one weights digest: like the verdict cache, the key
    # binds the URL, so each server is calibrated once; other settings are their own too.
    small = {"calibration_limit_per_subset": 2, "calibration_subsets": ["natural", "mt_bench"]}
    candidate, champion = samples(["2"], ["3"])

    def cached(server: ScriptedServer, **settings: Any) -> bool:
        endpoint = JudgeEndpoint(server.base_url, "scripted-judge", model_digest="sha256:same")
        report = run_judge(config(small | settings), endpoint, candidate, champion, tmp_path)
        assert report.calibration is not None
        return report.calibration.cached

    with ScriptedServer(reference_judge) as one, ScriptedServer(reference_judge) as two:
        assert not cached(one) and cached(one)
        assert not cached(two) and cached(two)
        assert not cached(one, calibration_limit_per_subset=3)
        assert not cached(one, calibration_subsets=["natural"])
        assert not cached(one, max_tokens=16)
        assert cached(one) and cached(two)
        urls = (one.base_url, two.base_url)
    folder = tmp_path / CALIBRATION_CACHE_DIR
    entries = list(folder.iterdir())
    assert len(entries) == 5 and all(p.suffix == ".json" for p in entries)  # no temp file
    for entry in entries:  # common.fs writes it: private, and the URL is only hashed in
        assert entry.stat().st_mode & 0o777 == 0o600
        assert not any(url in entry.read_text() for url in urls)


def test_a_malformed_or_misfiled_calibration_entry_is_a_miss(tmp_path: Path) -> None:
    with ScriptedServer(reference_judge) as server:
        result = calibrate_on_human(client(server), PAIRWISE, ["natural"], 2, STATS,
                                    min_kappa=0.6, min_order_agreement=0.75)
    cache = CalibrationCache(tmp_path / "calibration")
    cache.put("k1", result)
    hit = cache.get("k1")
    assert hit is not None and hit.cached
    assert json.dumps(dataclasses.asdict(dataclasses.replace(hit, cached=False))) == \
        json.dumps(dataclasses.asdict(result))
    text = (cache.root / "k1.json").read_text()
    entry = json.loads(text)
    bad = {
        "k2": text,  # another key's entry filed under this key
        "k3": json.dumps(entry["calibration"]),  # format 1: the bare calibration
        "k4": json.dumps(entry | {"format": 1, "key": "k4"}),
        "k5": text[: len(text) // 2],  # torn
        "k6": "[" * 100_000,  # nested past the recursion limit
        "k7": "[]",
        "k8": json.dumps(entry | {"key": "k8", "calibration": {"kappa": 1.0}}),
    }
    for key, body in bad.items():
        (cache.root / f"{key}.json").write_text(body)
        assert cache.get(key) is None, key
    (cache.root / "k9.json").mkdir()
    assert cache.get("k9") is None and cache.get("absent") is None


def test_a_calibration_with_failed_calls_is_not_cached(tmp_path: Path) -> None:
    def flaky(path: str, request: dict, call: int) -> Reply:
        return Reply(503, "busy") if call % 7 == 0 else reference_judge(path, request, call)

    cfg = config({"max_retries": 0, "backoff_seconds": 0.01})
    with ScriptedServer(flaky) as server:
        run_judge(cfg, JudgeEndpoint(server.base_url, "j"), *samples(["2"], ["3"]), tmp_path)
    assert not list((tmp_path / CALIBRATION_CACHE_DIR).glob("*.json"))


def test_a_jury_of_different_models_votes_and_is_named_a_jury() -> None:
    with ScriptedServer(reference_judge) as good, ScriptedServer(reference_judge) as good2, \
            ScriptedServer(always_a_judge) as biased:
        jury = Jury([client(good, "judge-a"), client(good2, "judge-b"),
                     client(biased, "judge-c")])
        result = calibrate(jury, jury.member_identities)
        assert good.num_requests == good2.num_requests == biased.num_requests == 320
    # Two of three agree with the annotators on every prompt: the jury does too.
    assert result.judge_kind == "jury" and result.passed and result.kappa == pytest.approx(1)
    assert result.jury_members == ["judge-a", "judge-b", "judge-c"]
    assert result.judge_identity == "jury[judge-a, judge-b, judge-c]"


def test_one_model_twice_is_not_a_jury() -> None:
    with ScriptedServer(reference_judge) as server:
        with pytest.raises(EvalError, match="DIFFERENT judge models") as info:
            Jury([client(server, "same"), client(server, "same")])
        assert info.value.code == "EVAL_JUDGE_JURY_INVALID"
        with pytest.raises(EvalError, match="at least two"):
            Jury([client(server, "alone")])
        # Same name, different weights: two models.
        assert len(Jury([client(server, "m", "d1"), client(server, "m", "d2")]).members) == 2


def test_plurality_vote() -> None:
    def reply(text: str | None) -> JudgeReply:
        return JudgeReply(text, None)

    assert plurality([reply("A"), reply("A"), reply("B")]).text == "A"
    assert plurality([reply("A"), reply("B"), reply(None)]).text == "TIE"
    assert plurality([reply("nonsense"), reply("B"), reply(None)]).text == "B"
    assert plurality([reply(None), reply("chatty")]).text is None


def test_kappa_interval_is_seeded_and_brackets_the_estimate() -> None:
    human = ["1", "2"] * 30
    judge = ["1", "2"] * 25 + ["2", "1"] * 5
    low, high = kappa_interval(human, judge, STATS)
    assert (low, high) == kappa_interval(human, judge, STATS)
    assert low < 2 * 50 / 60 - 1 < high  # kappa = 2 * agreement - 1 for balanced labels


def test_calibration_settings_are_validated() -> None:
    bad: dict[str, Any]
    for bad in ({"calibration_subsets": ["natural", "nope"]},
                {"calibration_subsets": []},
                {"calibration_subsets": ["natural", "natural"]},
                {"calibration_limit_per_subset": 0},
                {"min_order_agreement": 1.5}):
        with pytest.raises(EvalError) as info:
            JudgeConfig(**bad)
        assert info.value.code == "EVAL_CONFIG_INVALID"


def samples(candidate: list[str], champion: list[str]
            ) -> tuple[list[SampleResult], list[SampleResult]]:
    def make(outputs: list[str]) -> list[SampleResult]:
        return [SampleResult("shipyard_exact", i, f"h{i}", {"exact_match": 0.0}, out,
                             {"prompt": f"What is {i + 1} + 1?", "answer": str(i + 2)})
                for i, out in enumerate(outputs)]

    return make(candidate), make(champion)


def harness(exact: list[SampleResult]) -> HarnessResult:
    scoring = [SampleResult("shipyard_scoring_check", i, f"c{i}", {"acc": 1.0}, None, {})
               for i in range(10)]
    return HarnessResult("digest", "hf", {"shipyard_scoring_check": {"acc": 1.0},
                                          "shipyard_exact": {"exact_match": 0.0}},
                         {"shipyard_scoring_check": scoring, "shipyard_exact": exact},
                         {}, {}, 0.0)


def test_the_report_shows_the_calibration_table_beside_the_published_judges(
        tmp_path: Path) -> None:
    from eval.report import calibration_table, jsonable

    with ScriptedServer(reference_judge) as server:
        report = run_judge(config({"calibration_limit_per_subset": 4,
                                   "calibration_subsets": ["natural", "mt_bench"]}),
                           JudgeEndpoint(server.base_url, "scripted-judge"),
                           *samples(["2"], ["3"]), tmp_path)
    table = calibration_table(jsonable(report.to_dict()))
    assert "Judge calibration on human labels (LLMBar)" in table
    assert "GPT-4 (Vanilla, published)" in table and "mt_bench" in table
    assert "scripted-judge" in table
