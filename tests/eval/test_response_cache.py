"""The eval response cache holds JSON, never pickles: a planted row is a miss, not code.

The attack: whoever can write the eval cache directory plants a row whose value is a pickle
that runs code when read and returns a forged response (a perfect log-likelihood), which the
metric, the eval report and then register's signature were computed from. lm-eval's own
`CachingLM` (a pickle `SqliteDict`) ran it; ours (eval/cache.py) stores JSON text and treats
anything that is not a response of the request's type as a miss.
"""

from __future__ import annotations

import pickle
import sqlite3
from pathlib import Path

import pytest

from eval.cache import RESPONSE_CACHE_FILE, ResponseCache
from eval.harness import HarnessOptions, ModelSource, run_harness
from eval.stage import bos_token
from eval.suite.specs import prepare_suite
from testing.tiny_chat_model import build_tiny_chat_model


class _RunsCodeAndForges:
    """Unpickling this writes `marker` and yields a perfect log-likelihood."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        write = f"__import__('builtins').open({str(self.marker)!r}, 'w').write('code ran')"
        return eval, (f"[{write}, (-0.0, True)][1]",)


def _plant_everywhere(cache_dir: Path, payload: bytes) -> int:
    """Overwrite every row of every SQLite file under `cache_dir` with `payload`."""
    planted = 0
    for db_file in cache_dir.rglob("*.db"):
        db = sqlite3.connect(db_file)
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE "
                                               "type = 'table'")]
        for table in tables:
            planted += db.execute(f'UPDATE "{table}" SET value = ?', (payload,)).rowcount
        db.commit()
        db.close()
    return planted


@pytest.mark.integration
def test_a_planted_pickle_row_neither_runs_nor_forges_a_metric(tmp_path: Path) -> None:
    model_dir = build_tiny_chat_model(tmp_path / "model")
    suite = prepare_suite(tmp_path / "suite", ["shipyard_scoring_check"],
                          bos_token=bos_token(model_dir), max_gen_tokens=8)
    options = HarnessOptions(limit_per_task=8, cache_dir=tmp_path / "cache")
    source = ModelSource(model_dir, "d" * 64)
    first = run_harness(source, suite, options)
    marker = tmp_path / "marker"
    assert _plant_everywhere(tmp_path / "cache", pickle.dumps(_RunsCodeAndForges(marker))) > 0

    again = run_harness(source, suite, options)
    assert not marker.exists()  # never unpickled
    assert again.metrics == first.metrics  # every planted row was a miss, recomputed
    assert [p.name for p in (tmp_path / "cache").rglob("*.db")] == [RESPONSE_CACHE_FILE]


@pytest.mark.unit
def test_only_well_formed_responses_of_the_same_model_are_hits(tmp_path: Path) -> None:
    path = tmp_path / "d" / "hf" / RESPONSE_CACHE_FILE
    cache = ResponseCache(path, "d" * 64, "hf")
    request = ("context", " continuation")
    key = cache.key("loglikelihood", request)
    cache.put(key, [-1.5, False])
    assert cache.get("loglikelihood", key) == (-1.5, False)
    assert ResponseCache(path, "e" * 64, "hf").key("loglikelihood", request) != key
    assert cache.key("loglikelihood", ("context", " other")) != key

    def stored(value: bytes | str) -> object:
        cache._db.execute("UPDATE responses SET value = ? WHERE key = ?", (value, key))
        return cache.get("loglikelihood", key)

    for malformed in (b"\x80\x04K\x01.", "not json", "[1.0]", '["-1", true]', "[NaN, true]",
                      "[-1.0, 1]", '{"a": 1}', "null"):
        assert stored(malformed) is None, malformed
    assert cache.get("generate_until", cache.key("generate_until", ("x", {}))) is None
    cache.close()

    path.write_bytes(b"this is not a database")
    fresh = ResponseCache(path, "d" * 64, "hf")  # an unreadable file starts over, no error
    assert fresh.get("loglikelihood", key) is None
    fresh.close()
