"""IFEval offline: the packaged prompts, lm-eval's own checks on hand-written responses whose
verdicts are known, NLTK's Punkt English model from its pinned package, and no download."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from eval.errors import EvalError
from eval.suite import ifeval, punkt_data
from tests.conftest import subprocess_env

pytestmark = pytest.mark.unit

LOWERCASE = {"key": 1, "prompt": "Describe a cat. Your entire response should be in English, "
             "and in all lowercase letters.",
             "instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]}
# Punkt decides this one: "Dr." and "p.m." are abbreviations of its English model, so the
# response below is 2 sentences (a split at every ". " would count 4).
FEW_SENTENCES = {"key": 2, "prompt": "Say when he came, in less than 3 sentences.",
                 "instruction_id_list": ["length_constraints:number_sentences"],
                 "kwargs": [{"relation": "less than", "num_sentences": 3}]}
TWO_INSTRUCTIONS = {"key": 3, "prompt": "Name two colours in lowercase without commas.",
                    "instruction_id_list": ["change_case:english_lowercase",
                                            "punctuation:no_comma"],
                    "kwargs": [{}, {}]}


def test_ifeval_prompts_come_from_the_pinned_package() -> None:
    path = ifeval.ifeval_data_path()
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert len(rows) == 541
    assert {"key", "prompt", "instruction_id_list", "kwargs"} <= set(rows[0])
    assert path.is_relative_to(Path(str(importlib.metadata.distribution(
        ifeval.IFEVAL_DISTRIBUTION).locate_file(""))).resolve())


@pytest.mark.parametrize(("doc", "response", "strict", "instructions"), [
    (LOWERCASE, "a cat is a small furry animal. it sleeps a lot.", True, [True]),
    (LOWERCASE, "A cat is a small furry animal.", False, [False]),
    (FEW_SENTENCES, "Dr. Smith came at 5 p.m. on Monday. He stayed late.", True, [True]),
    (FEW_SENTENCES, "He came. He sat. He left.", False, [False]),
    (TWO_INSTRUCTIONS, "the sky is blue, and the grass is green.", False, [True, False]),
    (TWO_INSTRUCTIONS, "the sky is blue and the grass is green.", True, [True, True]),
    (LOWERCASE, "   ", False, [False]),  # an empty answer follows nothing
])
def test_lm_evals_checks_give_the_known_verdicts(doc: dict[str, Any], response: str,
                                                 strict: bool, instructions: list[bool],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import nltk

    monkeypatch.setattr(nltk, "download", _refuse_download)
    verdict = ifeval.process_results(doc, [response])
    assert verdict["prompt_level_strict_acc"] is strict
    assert verdict["inst_level_strict_acc"] == instructions
    assert ifeval.agg_inst_level_acc([verdict["inst_level_strict_acc"]]) == (
        sum(instructions) / len(instructions))


def test_verdicts_do_not_depend_on_langdetects_random_state() -> None:
    # langdetect samples n-grams at random; unseeded, these answers are English on some runs
    # and Norwegian, Welsh or Afrikaans on others (measured), so their verdict would flip.
    answers = ["base friend hello", "hello base ok", "dog yes the", "base hot is"]
    first = [ifeval.process_results(LOWERCASE, [a])["inst_level_strict_acc"] for a in answers]
    for _ in range(10):
        assert [ifeval.process_results(LOWERCASE, [a])["inst_level_strict_acc"]
                for a in answers] == first


def test_loose_scoring_forgives_a_markdown_first_line() -> None:
    # lm-eval's loose variant also tries the response without its first line and without '*'.
    verdict = ifeval.process_results(LOWERCASE, ["**My Answer**\na cat naps in the sun."])
    assert verdict["prompt_level_strict_acc"] is False
    assert verdict["prompt_level_loose_acc"] is True


def test_packaged_punkt_model_is_nltks_english_model() -> None:
    parameters = punkt_data.read_packaged_english_model()
    assert {"dr", "p.m", "mr", "inc"} <= parameters["ABBREV_TYPES"]  # type: ignore[operator]
    import nltk

    data_dir = punkt_data.use_packaged_punkt()
    tokenizer = nltk.data.load("nltk:tokenizers/punkt/english.pickle")  # what IFEval loads
    assert tokenizer.tokenize("Mr. J. Smith works at Acme Inc. in the U.S. He is 40.") == [
        "Mr. J. Smith works at Acme Inc. in the U.S.", "He is 40."]
    assert str(nltk.data.find("tokenizers/punkt_tab/english/")).startswith(str(data_dir))
    assert punkt_data.use_packaged_punkt() == data_dir  # once per process


def test_importing_and_scoring_ifeval_attempts_no_download(tmp_path: Path) -> None:
    """In a fresh interpreter (lm-eval's IFEval module downloads at import time), with
    nltk.download made to fail: the import and a Punkt-dependent check succeed."""
    script = textwrap.dedent(f"""
        import json, sys
        import nltk

        def refuse(*args, **kwargs):
            raise SystemExit("nltk.download was called: " + repr(args))

        nltk.download = refuse
        if sys.argv[1] == "control":
            try:
                nltk.data.find("tokenizers/punkt_tab")
                raise SystemExit(0)  # installed on this machine: nothing to control
            except LookupError:
                pass
            import lm_eval.tasks.ifeval.instructions_util  # unprepared: must try to download
            raise SystemExit("control: lm-eval's IFEval found punkt_tab without us")
        from eval.suite.ifeval import process_results  # as the task YAML reaches it

        verdict = process_results({FEW_SENTENCES!r}, ["Dr. Smith came. He left."])
        import lm_eval.tasks.ifeval.instructions_util as util
        print(json.dumps([verdict,
                          util.count_sentences("Dr. Smith came at 5 p.m. today. He left.")]))
    """)
    env = subprocess_env(tmp_path)
    env["NLTK_DATA"] = str(tmp_path / "empty-nltk-data")
    ours = subprocess.run([sys.executable, "-c", script, "ours"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert ours.returncode == 0, ours.stderr[-3000:]
    verdict, sentences = json.loads(ours.stdout.strip().splitlines()[-1])
    assert verdict["prompt_level_strict_acc"] is True and sentences == 2
    # The control: the same import without eval.suite.ifeval does try to download (unless
    # this machine has punkt_tab installed, where it exits 0 before importing).
    control = subprocess.run([sys.executable, "-c", script, "control"], env=env,
                             capture_output=True, text=True, timeout=300)
    assert control.returncode == 0 or "nltk.download was called" in control.stderr, (
        control.stderr[-3000:])


def test_missing_packages_are_refused_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(name: str) -> Any:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    with pytest.raises(EvalError) as data:
        ifeval.ifeval_data_path()
    assert data.value.code == "EVAL_IFEVAL_DATA_MISSING" and "make install" in data.value.message
    with pytest.raises(EvalError) as punkt:
        punkt_data.read_packaged_english_model()
    assert punkt.value.code == "EVAL_PUNKT_DATA_MISSING" and "make install" in punkt.value.message


def test_a_model_module_of_another_layout_is_refused(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    module = tmp_path / "english.py"
    module.write_text("ABBREV_TYPES = frozenset(('dr',))\n")
    monkeypatch.setattr(punkt_data, "packaged_english_model_path", lambda: module)
    with pytest.raises(EvalError) as info:
        punkt_data.read_packaged_english_model()
    assert info.value.code == "EVAL_PUNKT_DATA_MISSING" and "COLLOCATIONS" in info.value.message


def _refuse_download(*args: object, **kwargs: object) -> None:
    raise AssertionError(f"nltk.download called with {args}")
