"""LoRA fine-tuning (train.finetune=lora) of a tiny SmolLM2-shaped base model.

In-process: config refusals, target-module checks, seeded adapter init, and the export (the
merged model equals the PEFT model, keeps its tied embeddings and has exactly a full
fine-tune's files). Under torchrun with 2 gloo ranks: DDP and FSDP2 train a few steps, the
frozen base stays bit-identical in the checkpoint, the export loads with plain transformers
and equals base + adapter, and a resumed run lands on the same weights.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from common.config import build_config, load_preset
from common.errors import StageError
from testing.tiny_chat_model import build_tiny_chat_model
from tests.training.conftest import RankRun, run_ranks
from training.config import LLAMA_LINEAR_MODULES, TrainConfig
from training.lora import ADAPTER_FILES, adaptable_module_names, apply_lora

# Measured: merged vs PEFT logits differ by ~1e-6 (float summation order of W x + B A x).
LOGITS_TOLERANCE = 1e-5
LORA_TRAIN = {"finetune": "lora", "lora_rank": 4, "lora_alpha": 8, "max_steps": 6,
              "global_batch_size": 4, "micro_batch_size": 2, "seq_len": 64,
              "learning_rate": 1e-2, "min_learning_rate": 1e-3, "warmup_steps": 1,
              "checkpoint_every_steps": 3, "eval_every_steps": 3, "eval_batches": 1}


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny-chat") / "base")


@pytest.fixture(scope="module")
def chat_dataset_dir(base_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A slice of the shipped corpus through the real validate stage, tokenized with the base
    model's own tokenizer (data.base_model_dir), as a fine-tuning run gets it."""
    from data.config import DataConfig
    from data.stage import validate_dataset

    root = tmp_path_factory.mktemp("chat-data")
    corpus = Path(__file__).resolve().parents[2] / "data" / "corpus"
    for split, rows in (("train", 300), ("validation", 40), ("eval", 20)):
        lines = (corpus / f"{split}.jsonl").read_text().splitlines(keepends=True)[:rows]
        (root / f"{split}.jsonl").write_text("".join(lines))
    config = DataConfig(train_path=str(root / "train.jsonl"),
                        validation_path=str(root / "validation.jsonl"),
                        eval_path=str(root / "eval.jsonl"), base_model_dir=str(base_dir))
    return validate_dataset(config, root / "validated").output_dir


def _lora(base_dir: Path, **fields: object) -> TrainConfig:
    return TrainConfig(**{**LORA_TRAIN, "base_model_dir": str(base_dir), **fields})  # type: ignore[arg-type]


def _load_base(base_dir: Path) -> LlamaForCausalLM:
    return LlamaForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32)


# -- config -----------------------------------------------------------------------------------

@pytest.mark.unit
@pytest.mark.parametrize(("fields", "named", "rule"), [
    ({"finetune": "qlora"}, "train.finetune='qlora'", "must be one of ['full', 'lora']"),
    ({"finetune": "lora"}, "train.finetune='lora'", "needs train.base_model_dir"),
    ({"lora_rank": 0}, "train.lora_rank=0", "must be > 0"),
    ({"lora_alpha": 0}, "train.lora_alpha=0", "must be > 0"),
    ({"lora_dropout": 1.0}, "train.lora_dropout=1.0", "must be in [0, 1)"),
    ({"lora_target_modules": []}, "train.lora_target_modules=[]", "non-empty list"),
    ({"lora_target_modules": ["q_proj", "q_proj"]}, "train.lora_target_modules", "twice"),
])
def test_invalid_lora_settings_are_refused_naming_the_field(
    fields: dict[str, object], named: str, rule: str,
) -> None:
    with pytest.raises(StageError) as caught:
        TrainConfig(**fields)  # type: ignore[arg-type]
    assert caught.value.code == "CONFIG_INVALID"
    assert named in caught.value.message and rule in caught.value.message


@pytest.mark.unit
def test_full_is_the_default_and_lora_fields_come_from_presets_and_overrides() -> None:
    default = TrainConfig()
    assert default.finetune == "full"
    assert default.lora_target_modules == LLAMA_LINEAR_MODULES
    raw = load_preset("tiny", ["train.finetune=lora", "train.base_model_dir=/models/base",
                               "train.lora_target_modules=[q_proj, v_proj]"])
    config = build_config(TrainConfig, "train", raw["train"])
    assert config.lora_target_modules == ["q_proj", "v_proj"]
    assert json.loads(config.to_json())["lora_rank"] == 16  # in the digest like every field


@pytest.mark.unit
def test_an_unknown_target_module_is_refused_listing_the_models_linear_modules(
    base_dir: Path,
) -> None:
    model = _load_base(base_dir)
    assert adaptable_module_names(model) == sorted(LLAMA_LINEAR_MODULES)  # lm_head is tied
    with pytest.raises(StageError) as caught:
        apply_lora(model, _lora(base_dir, lora_target_modules=["q_proj", "qkv_proj"]))
    message = caught.value.message
    assert caught.value.code == "CONFIG_INVALID"
    assert "train.lora_target_modules" in message and "['qkv_proj']" in message
    assert str(sorted(LLAMA_LINEAR_MODULES)) in message  # what to use instead
    with pytest.raises(StageError, match="lm_head is tied to the input embeddings"):
        apply_lora(model, _lora(base_dir, lora_target_modules=["lm_head"]))


@pytest.mark.unit
def test_the_same_seed_gives_the_same_adapters_and_only_adapters_train(base_dir: Path) -> None:
    def adapters(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        model = apply_lora(_load_base(base_dir), _lora(base_dir))
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    first, again, other = adapters(1234), adapters(1234), adapters(7)
    assert first and all("lora_" in name for name in first)
    # r=4 on 7 projections x 2 layers; lora_B starts at zero so step 0 is the base model
    assert len(first) == 2 * 7 * 2
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert any(not torch.equal(first[n], other[n]) for n in first if "lora_A" in n)


@pytest.mark.unit
def test_mfu_counts_no_weight_gradient_flops_for_frozen_weights(base_dir: Path) -> None:
    from training.model import flops_per_token

    config = _load_base(base_dir).config
    full = flops_per_token(config, 128, 10_000_000)
    assert flops_per_token(config, 128, 10_000_000, 10_000_000) == full  # 6N as before
    # 4N (forward + input gradients) + 2N for the weights that train
    assert full - flops_per_token(config, 128, 10_000_000, 100_000) == 2 * 9_900_000


# -- export -----------------------------------------------------------------------------------

@pytest.mark.unit
def test_the_merged_export_equals_the_peft_model_and_has_a_full_fine_tunes_files(
    base_dir: Path, tmp_path: Path,
) -> None:
    from training.loop import _merge_lora, _write_hf_directory

    config = _lora(base_dir)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    torch.manual_seed(0)
    peft_model = apply_lora(_load_base(base_dir), config)
    with torch.no_grad():  # a trained-looking adapter: B = 0 would make the merge a no-op
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)
    batch = torch.randint(3, len(tokenizer), (2, 16))
    with torch.no_grad():
        expected = peft_model.eval()(input_ids=batch).logits

    merged, state = _merge_lora(peft_model.state_dict(), config, tmp_path / "model-lora-adapter")
    _write_hf_directory(merged, state, tokenizer, config, tmp_path / "model")
    full = _load_base(base_dir)
    full.config.use_cache = False  # as training.model loads the base for a full fine-tune
    _write_hf_directory(full, full.state_dict(), tokenizer, config, tmp_path / "full")

    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "model").eval()
    with torch.no_grad():
        logits = exported(input_ids=batch).logits
    assert torch.allclose(logits, expected, atol=LOGITS_TOLERANCE), (logits - expected).abs().max()
    assert exported.config.tie_word_embeddings
    assert exported.lm_head.weight is exported.model.embed_tokens.weight
    files = sorted(p.name for p in (tmp_path / "model").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "full").iterdir())
    assert not any("adapter" in name for name in files)
    config_json = (tmp_path / "model" / "config.json").read_text()
    assert config_json == (tmp_path / "full" / "config.json").read_text()  # no PEFT keys
    assert set(load_file(tmp_path / "model" / "model.safetensors")) == set(
        load_file(tmp_path / "full" / "model.safetensors"))
    assert sorted(p.name for p in (tmp_path / "model-lora-adapter").iterdir()) == sorted(
        ADAPTER_FILES)


# -- distributed runs -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lora_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lora-home")


def _run(parallelism: str, base_dir: Path, dataset_dir: Path, work: Path, home: Path
         ) -> RankRun:
    config = {**LORA_TRAIN, "base_model_dir": str(base_dir), "parallelism": parallelism}
    run = run_ranks(2, config, dataset_dir, work, home)
    assert run.returncode == 0, run.output[-3000:]
    assert run.result is not None
    return run


@pytest.fixture(scope="module")
def ddp_run(base_dir: Path, chat_dataset_dir: Path, lora_home: Path,
            tmp_path_factory: pytest.TempPathFactory) -> RankRun:
    return _run("ddp", base_dir, chat_dataset_dir, tmp_path_factory.mktemp("ddp"), lora_home)


@pytest.fixture(scope="module")
def fsdp_run(base_dir: Path, chat_dataset_dir: Path, lora_home: Path,
             tmp_path_factory: pytest.TempPathFactory) -> RankRun:
    return _run("fsdp", base_dir, chat_dataset_dir, tmp_path_factory.mktemp("fsdp"), lora_home)


def _checkpointed_model(peft_model: torch.nn.Module, step_dir: Path) -> dict[str, torch.Tensor]:
    import torch.distributed.checkpoint as dcp

    state = {"model": peft_model.state_dict()}
    dcp.load(state, checkpoint_id=str(step_dir))
    return state["model"]


@pytest.mark.integration
def test_ddp_trains_only_the_adapters_and_exports_base_plus_adapter_merged(
    ddp_run: RankRun, base_dir: Path,
) -> None:
    from peft import PeftModel

    assert ddp_run.result is not None
    losses, metrics = ddp_run.result["loss_curve"], ddp_run.result["metrics"]
    assert len(losses) == LORA_TRAIN["max_steps"] and losses[-1] < losses[0] - 0.3, losses
    assert 0 < metrics["num_trainable_parameters"] < 0.01 * metrics["num_parameters"]

    # The checkpoint holds the PEFT model: the frozen base is bit for bit the base model.
    torch.manual_seed(0)
    skeleton = apply_lora(_load_base(base_dir), _lora(base_dir))
    trained = _checkpointed_model(skeleton, ddp_run.checkpoint_dir / "step-00000006")
    base = load_file(base_dir / "model.safetensors")
    frozen = {n: t for n, t in trained.items() if "lora_" not in n}
    assert len(frozen) == len(skeleton.state_dict()) - 2 * 7 * 2
    for name, tensor in frozen.items():
        base_name = name.removeprefix("base_model.model.").replace(".base_layer", "")
        base_name = "model.embed_tokens.weight" if base_name == "lm_head.weight" else base_name
        assert torch.equal(tensor, base[base_name]), f"{name} changed"
    assert all(trained[n].abs().sum() > 0 for n in trained if "lora_B" in n)  # all trained

    # The export is a plain transformers model equal to base + the adapter written beside it.
    adapter_dir = Path(ddp_run.result["adapter_dir"])
    assert adapter_dir == ddp_run.output_dir.with_name("model-lora-adapter")
    exported = AutoModelForCausalLM.from_pretrained(ddp_run.output_dir).eval()
    with_adapter = PeftModel.from_pretrained(_load_base(base_dir), adapter_dir).eval()
    batch = torch.randint(3, exported.config.vocab_size, (2, 16))
    with torch.no_grad():
        difference = (exported(input_ids=batch).logits
                      - with_adapter(input_ids=batch).logits).abs().max()
    assert difference < LOGITS_TOLERANCE
    assert exported.config.tie_word_embeddings


@pytest.mark.integration
def test_the_adapter_is_logged_to_the_training_runs_mlflow_artifacts(
    ddp_run: RankRun, lora_home: Path,
) -> None:
    from mlflow import MlflowClient

    assert ddp_run.result is not None
    client = MlflowClient(f"sqlite:///{lora_home / '.shipyard' / 'mlflow.db'}")
    run = client.get_run(ddp_run.result["mlflow_run_id"])
    assert run.data.params["finetune"] == "lora"
    assert int(run.data.params["num_trainable_parameters"]) == int(
        ddp_run.result["metrics"]["num_trainable_parameters"])
    logged = client.list_artifacts(run.info.run_id, "lora_adapter")
    assert sorted(Path(a.path).name for a in logged) == sorted(ADAPTER_FILES)


@pytest.mark.integration
def test_fsdp2_with_frozen_base_weights_matches_ddp(ddp_run: RankRun, fsdp_run: RankRun
                                                    ) -> None:
    assert ddp_run.result is not None and fsdp_run.result is not None
    # same ranks, same seeds, same dropout masks: only the reduction order could differ
    assert fsdp_run.result["loss_curve"] == pytest.approx(ddp_run.result["loss_curve"],
                                                          abs=1e-4)
    ddp_weights = load_file(ddp_run.output_dir / "model.safetensors")
    for name, tensor in load_file(fsdp_run.output_dir / "model.safetensors").items():
        assert torch.allclose(tensor, ddp_weights[name], atol=1e-5), name


@pytest.mark.integration
def test_a_lora_run_resumed_from_its_checkpoint_lands_on_the_same_weights(
    fsdp_run: RankRun, base_dir: Path, chat_dataset_dir: Path, lora_home: Path,
    tmp_path: Path,
) -> None:
    """The FSDP run's checkpoints without the last one, as a run killed after step 5 leaves
    them: the rerun resumes at step 3 (adapters, optimizer, RNG for dropout) and finishes on
    the uninterrupted run's exact merged model and adapter."""
    work = tmp_path / "resumed"
    shutil.copytree(fsdp_run.checkpoint_dir, work / "checkpoints")
    shutil.rmtree(work / "checkpoints" / "step-00000006")
    resumed = _run("fsdp", base_dir, chat_dataset_dir, work, lora_home)
    assert resumed.result is not None and fsdp_run.result is not None
    assert resumed.result["resumed_from_step"] == 3
    assert resumed.result["loss_curve"] == fsdp_run.result["loss_curve"]
    assert resumed.result["model_digest"] == fsdp_run.result["model_digest"]
    adapter = "adapter_model.safetensors"
    assert (Path(resumed.result["adapter_dir"]) / adapter).read_bytes() == (
        Path(fsdp_run.result["adapter_dir"]) / adapter).read_bytes()
