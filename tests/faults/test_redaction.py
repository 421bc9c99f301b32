"""Credentials inside URIs never reach what Shipyard writes (issue #10 §1).

The audit runs, in a child process set up like a task edge (`quiet_console`), the cheapest
real path through every surface, with secret-bearing URIs as input: a tracking URI with a
password, a judge URL with an api_key, a pre-signed data URI, a checkpoint URI with a
password. Then it greps EVERYTHING produced for the secret marker: the run report directory
(HTML, JSON copies, summaries, pipeline.log), the Flyte decks, the MLflow store (the sqlite
file itself: params, tags, version descriptions, dataset inputs; and every artifact,
including the DSSE payloads of the provenance and eval attestation, base64-decoded), the
decision records, the deployment history and the child's stdout and stderr.

The audit can fail: the inputs carry the marker, every surface is checked to carry the
redacted URI (so absence is not "never written"), and `test_the_grep_finds_a_planted_secret`
shows the same grep finding an un-redacted string, plain and inside a DSSE payload.

Surfaces reached without a server: the registry's error for an unreachable tracking server
(MLflow HTTP retries off), the eval report built from the judge URL (eval.report /
eval.tracking; the judge is not called), the decision record and history written directly.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from common.redact import redact, redact_text
from common.settings import PROJECT_ROOT

pytestmark = [pytest.mark.faults, pytest.mark.integration]

MARKER = "s3cr3t"
TRACKING_URI = f"https://alice:{MARKER}-tracking-pw@127.0.0.1:9/"
JUDGE_URL = f"https://judge.example/v1?api_key={MARKER}-judge-key&model=m"
DATA_URI = f"s3://bucket/train.jsonl?X-Amz-Date=1&X-Amz-Signature={MARKER}-data-sig"
CHECKPOINT_URI = f"https://bob:{MARKER}-ckpt-pw@store.example/ckpt"
SECRET_URIS = (TRACKING_URI, JUDGE_URL, DATA_URI, CHECKPOINT_URI)


@pytest.mark.unit
@pytest.mark.parametrize(("text", "expected"), [
    (TRACKING_URI, "https://***@127.0.0.1:9/"),
    (f"MLflow at {TRACKING_URI} failed", "MLflow at https://***@127.0.0.1:9/ failed"),
    ("https://u:p@ss@h:5000/x", "https://***@h:5000/x"),  # an unencoded '@' in the password
    ("https://ghp_token@github.com/o/r", "https://***@github.com/o/r"),  # token as user name
    ("git+ssh://git@github.com/o/r@abc", "git+ssh://git@github.com/o/r@abc"),  # no secret
    ("git+https://github.com/o/r@abc", "git+https://github.com/o/r@abc"),
    (JUDGE_URL, "https://judge.example/v1?api_key=***&model=m"),
    (DATA_URI, "s3://bucket/train.jsonl?X-Amz-Date=1&X-Amz-Signature=***"),
    ("<a href='https://h/?a=1&amp;token=t'>", "<a href='https://h/?a=1&amp;token=***'>"),
    ("gs://b/o?sig=x#frag", "gs://b/o?sig=***#frag"),
    ("sqlite:////home/u/.shipyard/mlflow.db", "sqlite:////home/u/.shipyard/mlflow.db"),
    ("user@host wrote key=value", "user@host wrote key=value"),  # no URI, nothing to redact
])
def test_redact_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected
    assert redact_text(expected) == expected  # idempotent


@pytest.mark.unit
def test_redact_walks_documents_and_keeps_their_shape() -> None:
    document: dict[str, Any] = {"uri": TRACKING_URI, "list": [JUDGE_URL, 3],
                                "pair": (DATA_URI, None), CHECKPOINT_URI: True}
    clean = redact(document)
    assert MARKER not in json.dumps(clean) and MARKER in json.dumps(document)
    assert clean["list"][1] == 3 and isinstance(clean["pair"], tuple)


# -- the audit ----------------------------------------------------------------------------

_CHILD = """
import json, logging, os, sys
from dataclasses import asdict
from pathlib import Path
import flytekit
from mlflow import MlflowClient

from common.digests import sha256_file
from common.html import StageFacts
from deploy.config import DeployConfig
from deploy.decision_record import log_to_mlflow as log_decision, start_record, write_record
from deploy.history import append_entry
from deploy.model_ref import ModelToDeploy
from deploy.report import report_page
from eval.config import EvalConfig, JudgeConfig
from eval.gate import GateDecision
from eval.harness import HarnessResult
from eval.judge.run import JudgeReport
from eval.report import build_report, render_html, write_json
from eval.stage import EvalOutcome
from eval.suite.specs import Suite
from eval.tracking import log_to_mlflow as log_eval
from registry.errors import RegistryError
from registry.stage import RegistrationRequest, register_model
from tasks.flyte_adapter import error_html, publish_report, quiet_console
from tests.deploy.conftest import make_registry, register_kwargs
from training.telemetry import MlflowLogger

model_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
tracking, judge, data, ckpt = json.loads(sys.argv[3])
home = Path(os.environ["SHIPYARD_HOME"])
quiet_console()
log = logging.getLogger("registry.stage")

# logs: ours, a third-party logger, a traceback
log.warning("tracking store %s, judge %s", tracking, judge)
logging.getLogger("mlflow.tracking").error("retrying %s", tracking)
try:
    raise ValueError(f"cannot open {ckpt}")
except ValueError:
    log.exception("checkpoint failed")

# register: a real registration (sqlite) with secret-bearing inputs
registry = make_registry(home)
kwargs = register_kwargs(registry, model_dir, "audit-model")
train_config = json.dumps({"checkpoint_uri": ckpt, "data_uri": data})
import hashlib
kwargs.update(
    resolved_config_json=train_config,
    config_digest=hashlib.sha256(train_config.encode()).hexdigest(),
    dataset_uris={split: data for split in kwargs["dataset_files"]},
    workflow_inputs={"tracking_uri": tracking, "judge_base_url": judge},
    eval_report={"gate_outcome": "PASS", "summary": {"judge": judge},
                 "config": {"judge_base_url": judge}},
    eval_claims={"judge_base_url": judge})
result = register_model(RegistrationRequest(**kwargs))
publish_report("register", "Model registration", f"<p>{result.model_uri} {tracking}</p>")

# register against an unreachable tracking server: the error, its report and its log line
try:
    register_model(RegistrationRequest(**{**kwargs, "tracking_uri": tracking}))
except RegistryError as error:
    log.error("register failed: %s", error)
    publish_report("register_error", "Model registration", error_html(error), error=error)
else:
    raise SystemExit("registering against an unreachable server succeeded")

# evaluate: the report (judge URL in the config and the judge section), HTML, MLflow
report = build_report(
    decision=GateDecision("PASS", [f"judge at {judge}"], [], [], "absolute"),
    candidate=HarnessResult(result.model_digest, "hf", {}, {}, {}, {}, 0.0),
    champion=None, judge=JudgeReport("ok", "judge", judge),
    suite=Suite(out, out, (), {}, {}, "", True),
    config=asdict(EvalConfig(judge=JudgeConfig(base_url=judge))), timings={})
report_path = home / "eval" / "eval_report.json"
digest = write_json(report, report_path)
html = render_html(report)
outcome = EvalOutcome(report, report_path, digest, html, GateDecision("PASS", [], [], [], "x"),
                      None, None, JudgeReport("ok"))
log_eval(outcome, registry.settings.mlflow_tracking_uri, "no-such-run")
publish_report("evaluate", "Evaluation", html, json_path=report_path,
               facts=StageFacts(headline=f"judge {judge}", facts=[("judge", judge)]))

# train: MLflow params, tags and JSON of the training run
telemetry = MlflowLogger(registry.settings.mlflow_tracking_uri, home / "mlartifacts", "audit",
                         None, {"checkpoint_uri": ckpt, "data_uri": data})
telemetry.set_tag("checkpoint", ckpt)
telemetry.log_json({"data": data}, "data.json")
telemetry.finish()
publish_report("train", "Training", "<p>done</p>",
               facts=StageFacts(facts=[("MLflow store", tracking), ("data", data)]))

# deploy: decision record (disk and MLflow), its report, the history
work = home / "deployments" / "audit"
model = ModelToDeploy(result.registered_model_name, result.version, result.model_digest,
                      result.mlflow_run_id)
record = start_record("audit", model, DeployConfig(prometheus_url=ckpt))
record.note(f"judge {judge}")
record.finish("PASS", "promoted", tracking, {})
record_path = write_record(work, record)
(work / "report.html").write_text(report_page(record))
assert log_decision(MlflowClient(registry.settings.mlflow_tracking_uri), model, record)
# the entry names the record it appends for, as a deploy's does (a record of a champion move
# without its history entry is a lost history: DEPLOY_HISTORY_MISSING)
append_entry(work, action="promoted", version="1", digest="0" * 64,
             decision_record_sha256=sha256_file(record_path), actor=f"ci {tracking}",
             key_pair=None)
publish_report("deploy_canary", "Deploy", report_page(record))

# the Flyte decks of this process
decks = out / "decks"
decks.mkdir()
for number, deck in enumerate(flytekit.current_context().decks):
    (decks / f"{number}.html").write_text(deck.name + deck.html)
print("AUDIT DONE", flush=True)
"""


def _texts(path: Path) -> list[str]:
    """The file's text and, for a DSSE envelope or Sigstore bundle, its decoded payload."""
    raw = path.read_bytes()
    texts = [raw.decode("utf-8", "replace")]
    if path.suffix == ".json":
        try:
            document = json.loads(raw)
        except ValueError:
            return texts
        stack = [document]
        while stack:  # every "payload" (DSSE) at any depth, base64-decoded
            item = stack.pop()
            if isinstance(item, dict):
                if isinstance(item.get("payload"), str):
                    texts.append(base64.b64decode(item["payload"]).decode("utf-8", "replace"))
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
    return texts


def leaks(root: Path, marker: str = MARKER) -> dict[str, int]:
    """Files under `root` holding `marker` (in their bytes or decoded payloads) -> count."""
    found = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        count = sum(text.count(marker) for text in _texts(path))
        if count:
            found[str(path.relative_to(root))] = count
    return found


def test_the_grep_finds_a_planted_secret(tmp_path: Path) -> None:
    (tmp_path / "plain.html").write_text(f"<p>{TRACKING_URI}</p>")
    envelope = {"payloadType": "application/vnd.in-toto+json", "signatures": [],
                "payload": base64.b64encode(json.dumps({"uri": JUDGE_URL}).encode()).decode()}
    (tmp_path / "attestations").mkdir()
    (tmp_path / "attestations" / "provenance.dsse.json").write_text(json.dumps(envelope))
    assert MARKER not in (tmp_path / "attestations" / "provenance.dsse.json").read_text()
    assert leaks(tmp_path) == {"plain.html": 1, "attestations/provenance.dsse.json": 1}


@pytest.fixture(scope="module")
def audit(model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[Path, str]:
    """(the directory holding everything the child produced, its stdout + stderr)."""
    root = tmp_path_factory.mktemp("redaction-audit")
    (root / "tmp").mkdir()
    env = {**os.environ, "SHIPYARD_HOME": str(root / ".shipyard"), "TMPDIR": str(root / "tmp"),
           "PYTHONPATH": str(PROJECT_ROOT), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
           "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    env.pop("MLFLOW_TRACKING_URI", None)
    out = root / "out"
    out.mkdir()
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(model_dirs["stable"]), str(out),
         json.dumps(SECRET_URIS)], cwd=PROJECT_ROOT, env=env, capture_output=True,
        text=True, timeout=300, check=False)
    console = child.stdout + child.stderr
    assert child.returncode == 0 and "AUDIT DONE" in child.stdout, console[-5000:]
    return root, console


def test_no_credential_from_a_uri_reaches_any_output(audit: tuple[Path, str]) -> None:
    root, console = audit
    assert all(MARKER in uri for uri in SECRET_URIS)  # the inputs carry the secret
    home = root / ".shipyard"
    reports = next((home / "reports").iterdir())
    produced = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}

    # every surface was written, and carries the URIs in redacted form
    def text_of(pattern: str) -> str:
        paths = sorted(root.glob(pattern))
        assert paths, f"nothing matches {pattern}: {sorted(produced)[:50]}"
        return "\n".join("\n".join(_texts(p)) for p in paths)

    assert "https://***@127.0.0.1:9/" in text_of(f".shipyard/reports/{reports.name}/pipeline.log")
    assert "https://***@127.0.0.1:9/" in console  # the console line of our warning
    assert "api_key=***" in text_of(f".shipyard/reports/{reports.name}/evaluate.json")
    assert "MLFLOW_ERROR" in text_of(f".shipyard/reports/{reports.name}/register_error.html")
    assert "https://***@store.example/ckpt" in text_of(".shipyard/mlartifacts/**/provenance*")
    assert "api_key=***" in text_of(".shipyard/mlartifacts/**/eval.dsse.json")
    assert "X-Amz-Signature=***" in text_of(".shipyard/mlflow.db")
    assert "https://***@store.example/ckpt" in text_of(".shipyard/deployments/audit/records/*")
    assert "https://***@127.0.0.1:9/" in text_of(".shipyard/deployments/audit/history.jsonl")
    assert "https://***@store.example/ckpt" in text_of(".shipyard/mlartifacts/**/deploy/*")
    assert "api_key=***" in text_of("out/decks/*")
    assert len(produced) > 30, sorted(produced)

    # ... and nowhere the secret itself
    assert leaks(root) == {}
    assert MARKER not in console, [line for line in console.splitlines() if MARKER in line]
