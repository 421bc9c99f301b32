"""The deployment history: append-only, hash-chained, signed; a broken chain and an alias the
history never set are refused (DEPLOY_HISTORY_BROKEN, DEPLOY_CHAMPION_UNKNOWN)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.digests import sha256_file
from common.errors import StageError
from common.settings import Settings
from deploy import history
from deploy.decision_record import write_record
from deploy.session import check_champion_in_history
from registry.dsse import sign_envelope
from registry.signing import KeyPair, ensure_key_pair
from tests.deploy.records import finished_record

pytestmark = pytest.mark.unit


@pytest.fixture
def keys(tmp_path: Path) -> KeyPair:
    return ensure_key_pair(tmp_path / "home" / "keys")


@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    return tmp_path / "home" / "deployments" / "shipyard-tiny"


def _append(work_dir: Path, keys: KeyPair | None, action: history.HistoryAction,
            version: str) -> history.HistoryEntry:
    return history.append_entry(
        work_dir, action=action, version=version, digest=f"{version}" * 64,
        decision_record_sha256="r" * 64, actor="alice@host", key_pair=keys,
        public_key_path=keys.public_key_path if keys else None)


def _three(work_dir: Path, keys: KeyPair | None) -> list[history.HistoryEntry]:
    return [_append(work_dir, keys, "first_deployment", "1"),
            _append(work_dir, keys, "rolled_back", "2"),
            _append(work_dir, keys, "promoted", "3")]


def _lines(work_dir: Path) -> list[str]:
    return history.history_path(work_dir).read_text().splitlines()


def _broken(work_dir: Path, keys: KeyPair) -> StageError:
    with pytest.raises(StageError) as failure:
        history.read_history(work_dir, public_key_path=keys.public_key_path)
    assert failure.value.code == "DEPLOY_HISTORY_BROKEN"
    return failure.value


def _refused(work_dir: Path, keys: KeyPair | None, code: str,
             anchor: history.Anchor | None = None) -> StageError:
    with pytest.raises(StageError) as failure:
        history.read_history(work_dir, public_key_path=keys.public_key_path if keys else None,
                             anchor=anchor)
    assert failure.value.code == code, failure.value.message
    return failure.value


def test_entries_are_chained_signed_and_read_back(work_dir: Path, keys: KeyPair) -> None:
    written = _three(work_dir, keys)
    read = history.read_history(work_dir, public_key_path=keys.public_key_path)
    assert read == written
    assert read[0].previous_sha256 is None
    assert [e.previous_sha256 for e in read[1:]] == [e.sha256 for e in read[:-1]]
    assert [(e.action, e.version, e.actor) for e in read] == [
        ("first_deployment", "1", "alice@host"), ("rolled_back", "2", "alice@host"),
        ("promoted", "3", "alice@host")]
    assert history.current_champion(read) == "3"
    assert history.champion_versions(read) == {"1", "3"}  # a rolled-back version never was
    assert all(json.loads(line)["signature"] for line in _lines(work_dir))
    assert [(e.deployment, e.sequence) for e in read] == [("shipyard-tiny", n) for n in (1, 2, 3)]
    assert history.read_history(work_dir.parent / "other") == []


def test_an_edited_entry_breaks_the_chain(work_dir: Path, keys: KeyPair) -> None:
    _three(work_dir, keys)
    lines = _lines(work_dir)
    raw = json.loads(lines[1])
    raw["entry"]["action"] = "promoted"  # rewrite history: version 2 "was" promoted
    lines[1] = json.dumps(raw)
    history.history_path(work_dir).write_text("\n".join(lines) + "\n")
    assert _broken(work_dir, keys).details["line"] == 2


def test_an_edited_entry_with_a_recomputed_digest_fails_its_signature(
    work_dir: Path, keys: KeyPair
) -> None:
    _three(work_dir, keys)
    lines = _lines(work_dir)
    raw = json.loads(lines[2])
    entry = history.HistoryEntry(**{**raw["entry"], "actor": "mallory@host"})
    raw.update(entry=entry.__dict__, entry_sha256=entry.sha256)
    lines[2] = json.dumps(raw)
    history.history_path(work_dir).write_text("\n".join(lines) + "\n")
    assert "signature" in _broken(work_dir, keys).message


@pytest.mark.parametrize("edit", ["remove", "reorder", "strip_signature"])
def test_removed_reordered_or_unsigned_lines_break_the_chain(
    work_dir: Path, keys: KeyPair, edit: str
) -> None:
    _three(work_dir, keys)
    lines = _lines(work_dir)
    if edit == "remove":
        del lines[1]
    elif edit == "reorder":
        lines[1], lines[2] = lines[2], lines[1]
    else:
        raw = json.loads(lines[2])
        raw["signature"] = None
        lines[2] = json.dumps(raw)
    history.history_path(work_dir).write_text("\n".join(lines) + "\n")
    if edit == "strip_signature":
        assert _refused(work_dir, keys, "DEPLOY_HISTORY_UNSIGNED").details["line"] == 3
    else:
        _broken(work_dir, keys)


def test_appending_to_a_broken_history_is_refused(work_dir: Path, keys: KeyPair) -> None:
    _three(work_dir, keys)
    lines = _lines(work_dir)
    history.history_path(work_dir).write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(StageError) as failure:
        _append(work_dir, keys, "promoted", "4")
    assert failure.value.code == "DEPLOY_HISTORY_BROKEN"


def test_an_alias_the_history_never_set_is_refused(
    work_dir: Path, keys: KeyPair, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path / "home", mlflow_tracking_uri="sqlite:///x.db",
                        mlflow_artifact_root=tmp_path / "a")
    # No history yet: any alias (or none) is accepted, this is how a deployment starts.
    check_champion_in_history(None, work_dir, settings, "champion")
    _three(work_dir, keys)
    check_champion_in_history("3", work_dir, settings, "champion")
    check_champion_in_history("1", work_dir, settings, "champion")  # e.g. after an undo
    for tampered in ("2", "7", None):  # rolled back, never deployed, alias removed
        with pytest.raises(StageError) as failure:
            check_champion_in_history(tampered, work_dir, settings, "champion")
        assert failure.value.code == "DEPLOY_CHAMPION_UNKNOWN"
        assert failure.value.details["alias_version"] == tampered


def test_an_imported_champion_is_a_champion_move(work_dir: Path, keys: KeyPair,
                                                 tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", mlflow_tracking_uri="sqlite:///x.db",
                        mlflow_artifact_root=tmp_path / "a")
    _append(work_dir, keys, "imported", "1")
    _append(work_dir, keys, "promoted", "2")
    read = history.read_history(work_dir, public_key_path=keys.public_key_path)
    assert history.champion_versions(read) == {"1", "2"}
    check_champion_in_history("1", work_dir, settings, "champion")  # the base, after an undo


@pytest.mark.integration
def test_importing_never_replaces_a_recorded_champion(tmp_path: Path) -> None:
    """A deployment whose history records a champion keeps it, even when its alias was
    removed: the import registers the base but sets no alias and writes no entry."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from common.digests import model_root_digest
    from registry.config import RegisterConfig
    from registry.imports import ImportRequest
    from registry.mlflow_registry import client_for
    from tests.registry.conftest import allow_imports_from

    home = tmp_path / "home"
    settings = Settings(home=home, mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                        mlflow_artifact_root=home / "mlartifacts")
    base = tmp_path / "base"
    LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1,
                                 vocab_size=64)).save_pretrained(base)
    source = f"dir:{base}"
    allow_imports_from(settings.keys_dir, source)
    keys = ensure_key_pair(settings.keys_dir)
    work_dir = home / "deployments" / "shipyard-smol"
    client = client_for(settings.mlflow_tracking_uri)
    client.create_registered_model("shipyard-smol")
    history.write_anchor(client, "shipyard-smol", "shipyard-smol",
                         _append(work_dir, keys, "first_deployment", "7"))
    identity = json.dumps({"name": "base", "source": source, "licence": "unknown",
                           "model_digest": model_root_digest(base)})
    request = ImportRequest(
        model_dir=base, base_model_identity=identity,
        config=RegisterConfig(registered_model_name="shipyard-smol"),
        tracking_uri=settings.mlflow_tracking_uri, artifact_root=settings.mlflow_artifact_root,
        key_dir=settings.keys_dir, execution_id="local:development:t")

    result, entry = history.import_base_as_champion(request, settings)

    assert (result.version, result.champion_version, entry) == ("1", None, None)
    assert client_for(settings.mlflow_tracking_uri).get_registered_model(
        "shipyard-smol").aliases == {}
    assert [e.action for e in history.read_history(work_dir)] == ["first_deployment"]


# -- a history that proves itself (issue 19 item 2) ------------------------------------------
def test_a_fully_unsigned_rewrite_is_refused_once_the_key_exists(
    work_dir: Path, keys: KeyPair
) -> None:
    """Before: the first line decided, so a history rewritten without signatures (the alias
    history an attacker wants) read as an unsigned one."""
    _three(work_dir, keys)
    history.history_path(work_dir).unlink()
    forged = [_append(work_dir, None, "first_deployment", "1"),
              _append(work_dir, None, "promoted", "2")]  # 2 was rolled back, really
    assert history.read_history(work_dir) == forged  # no key known: nothing to check it with
    failure = _refused(work_dir, keys, "DEPLOY_HISTORY_UNSIGNED")
    assert failure.details["line"] == 1


def test_tail_truncation_is_refused_by_the_anchored_head(work_dir: Path, keys: KeyPair) -> None:
    """Before: dropping the last line(s) left a valid chain (and undid the record of a
    promotion or a rollback)."""
    anchor = history.Anchor(history.head_of(_three(work_dir, keys)))
    assert len(history.read_history(work_dir, public_key_path=keys.public_key_path,
                                    anchor=anchor)) == 3
    path = history.history_path(work_dir)
    path.write_text("\n".join(_lines(work_dir)[:2]) + "\n")
    failure = _refused(work_dir, keys, "DEPLOY_HISTORY_TRUNCATED", anchor)
    assert (failure.details["anchored_sequence"], failure.details["entries"]) == (3, 2)
    # An anchored history with its anchor removed fails closed too.
    _refused(work_dir, keys, "DEPLOY_HISTORY_UNANCHORED", history.Anchor(None))
    # A history ahead of its anchor (the tag write failed after the append) still reads.
    ahead = history.Anchor(history.HistoryHead(1, history.read_history(work_dir)[0].sha256))
    assert len(history.read_history(work_dir, public_key_path=keys.public_key_path,
                                    anchor=ahead)) == 2


def test_an_older_copy_of_the_history_is_refused_by_the_anchor(
    work_dir: Path, keys: KeyPair
) -> None:
    entries = _three(work_dir, keys)
    old_copy = _lines(work_dir)[:2]
    anchor = history.Anchor(history.head_of(entries))
    history.history_path(work_dir).write_text("\n".join(old_copy) + "\n")
    _append(work_dir, keys, "promoted", "9")  # even re-grown to the same length
    _refused(work_dir, keys, "DEPLOY_HISTORY_TRUNCATED", anchor)


def test_a_deleted_history_fails_closed(work_dir: Path, keys: KeyPair) -> None:
    """Before: no file read as a new deployment, so any alias was accepted."""
    anchor = history.Anchor(history.head_of(_three(work_dir, keys)))
    history.history_path(work_dir).unlink()
    assert "anchors entry 3" in _refused(work_dir, keys, "DEPLOY_HISTORY_MISSING",
                                         anchor).message
    # Without the anchor, the decision records of champion moves say a history existed.
    assert history.read_history(work_dir, anchor=history.Anchor(None)) == []
    write_record(work_dir, finished_record("models:/shipyard-tiny/3", "promoted"))
    _refused(work_dir, keys, "DEPLOY_HISTORY_MISSING")
    with pytest.raises(StageError) as failure:
        _append(work_dir, keys, "promoted", "4")
    assert failure.value.code == "DEPLOY_HISTORY_MISSING"


def test_the_first_deploys_own_record_does_not_count_as_a_lost_history(
    work_dir: Path, keys: KeyPair
) -> None:
    """Deploy writes its record before the line that names it; the first line must go in."""
    record = write_record(work_dir, finished_record("models:/shipyard-tiny/1",
                                                    "first_deployment"))
    entry = history.append_entry(
        work_dir, action="first_deployment", version="1", digest="1" * 64,
        decision_record_sha256=sha256_file(record), actor="alice@host", key_pair=keys,
        anchor=history.Anchor(None))
    assert history.read_history(work_dir, public_key_path=keys.public_key_path,
                                anchor=history.Anchor(history.head_of([entry]))) == [entry]


def test_a_refused_deploy_record_does_not_need_a_history(work_dir: Path) -> None:
    write_record(work_dir, finished_record("models:/shipyard-tiny/1", "refused", "FAIL"))
    assert history.read_history(work_dir, anchor=history.Anchor(None)) == []


def test_another_deployments_signed_history_copied_in_is_refused(
    work_dir: Path, keys: KeyPair
) -> None:
    """Before: same key, valid chain, valid signatures: it read as this deployment's."""
    other = work_dir.parent / "shipyard-other"
    _three(other, keys)
    work_dir.mkdir(parents=True)
    history.history_path(work_dir).write_bytes(history.history_path(other).read_bytes())
    failure = _broken(work_dir, keys)
    assert "another deployment" in failure.message and failure.details["line"] == 1


def test_a_sequence_number_out_of_place_is_refused(work_dir: Path, keys: KeyPair) -> None:
    _three(work_dir, keys)
    lines = _lines(work_dir)
    raw = json.loads(lines[2])
    entry = history.HistoryEntry(**{**raw["entry"], "sequence": 4})  # "line 3 is missing"
    raw.update(entry=entry.__dict__, entry_sha256=entry.sha256,
               signature=sign_envelope(entry.canonical(), history.PAYLOAD_TYPE, keys))
    lines[2] = json.dumps(raw)
    history.history_path(work_dir).write_text("\n".join(lines) + "\n")
    assert "sequence" in _broken(work_dir, keys).message


def test_a_torn_last_line_is_reported_then_repaired(work_dir: Path, keys: KeyPair) -> None:
    """Before: a crash mid-append left a line that never parsed again: every later deploy
    failed with DEPLOY_HISTORY_BROKEN and no way out but editing the evidence by hand."""
    entries = _three(work_dir, keys)
    anchor = history.Anchor(history.head_of(entries))
    path = history.history_path(work_dir)
    complete = path.read_bytes()
    with path.open("ab") as handle:
        handle.write(b'{"entry": {"action": "prom')  # the crash
    failure = _refused(work_dir, keys, "DEPLOY_HISTORY_TORN", anchor)
    assert failure.details["line"] == 4 and "repair" in failure.message

    repair = history.repair_history(work_dir, public_key_path=keys.public_key_path,
                                    anchor=anchor)

    assert (repair.entries, repair.torn_bytes, repair.head) == (3, 26, anchor.head)
    assert path.read_bytes() == complete
    assert repair.torn_copy is not None and repair.torn_copy.read_bytes().startswith(b'{"en')
    _append(work_dir, keys, "promoted", "4")
    assert len(history.read_history(work_dir, public_key_path=keys.public_key_path)) == 4
    # Nothing else is "repaired": a history that does not reach its anchor stays refused.
    path.write_bytes(complete.split(b"\n", 1)[0] + b"\n" + b'{"torn')
    with pytest.raises(StageError) as refused:
        history.repair_history(work_dir, public_key_path=keys.public_key_path, anchor=anchor)
    assert refused.value.code == "DEPLOY_HISTORY_TRUNCATED"


def test_an_old_format_history_keeps_loading_and_is_continued(
    work_dir: Path, keys: KeyPair
) -> None:
    """Lines written before sequence numbers existed: same digests and signatures as then."""
    lines, previous = [], None
    for action, version in (("first_deployment", "1"), ("promoted", "2")):
        entry = history.HistoryEntry(action, version, version * 64, None,
                                     "2026-11-01T00:00:00+00:00", "alice@host", previous)
        fields = {k: v for k, v in entry.__dict__.items() if k not in ("deployment", "sequence")}
        lines.append(json.dumps({"entry": fields, "entry_sha256": entry.sha256,
                                 "signature": sign_envelope(entry.canonical(),
                                                            history.PAYLOAD_TYPE, keys)}))
        previous = entry.sha256
    work_dir.mkdir(parents=True)
    history.history_path(work_dir).write_text("\n".join(lines) + "\n")
    assert [e.sequence for e in history.read_history(
        work_dir, public_key_path=keys.public_key_path)] == [None, None]
    added = _append(work_dir, keys, "promoted", "3")
    assert (added.deployment, added.sequence) == ("shipyard-tiny", 3)
    read = history.read_history(work_dir, public_key_path=keys.public_key_path,
                                anchor=history.Anchor(history.HistoryHead(3, added.sha256)))
    assert history.current_champion(read) == "3"


@pytest.mark.integration
def test_the_head_is_anchored_in_mlflow(work_dir: Path, keys: KeyPair, tmp_path: Path) -> None:
    from registry.mlflow_registry import client_for

    client = client_for(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_registered_model("shipyard-tiny")
    assert history.read_anchor(client, "shipyard-tiny", "shipyard-tiny").head is None
    for entry in _three(work_dir, keys):
        assert history.write_anchor(client, "shipyard-tiny", "shipyard-tiny", entry)
    anchor = history.read_anchor(client, "shipyard-tiny", "shipyard-tiny")
    assert anchor.head == history.head_of(history.read_history(work_dir))
    assert client.get_registered_model("shipyard-tiny").tags == {
        "shipyard.history_head.shipyard-tiny": anchor.head.tag_value() if anchor.head else ""}
    history.history_path(work_dir).write_text("\n".join(_lines(work_dir)[:2]) + "\n")
    _refused(work_dir, keys, "DEPLOY_HISTORY_TRUNCATED", anchor)
    assert history.read_anchor(client, "no-such-model", "x").head is None
