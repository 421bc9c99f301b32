"""The two trainers of bench/sft_peer.py, each run in its own child process, and what each
child measures (per-step wall and CPU time, its own peak RSS, a digest of its initial trainable
weights): Shipyard's setup and step functions, and TRL's `SFTTrainer` on Shipyard's batches,
schedule and initial weights. How the two are held equal: bench/sft_peer.py's docstring."""

from __future__ import annotations

import hashlib
import itertools
import resource
import time
from pathlib import Path
from typing import Any


def peak_rss_bytes() -> int:
    """This process's own peak RSS. Not `ru_maxrss`: Linux carries that across fork + exec,
    so a child would report at least the parent's RSS at the fork (here: the parent that
    built the model and validated the data)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _trainable_digest(model: Any) -> str:
    """sha256 over the trainable parameters' names and values, in module order."""
    digest = hashlib.sha256()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            digest.update(name.encode())
            digest.update(parameter.detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _steps_record(ends: list[tuple[float, float]], start: tuple[float, float]
                  ) -> dict[str, list[float]]:
    """Per-step wall and CPU seconds from (perf_counter, process_time) at each step's end."""
    marks = [start, *ends]
    return {"step_seconds": [b[0] - a[0] for a, b in itertools.pairwise(marks)],
            "step_cpu_seconds": [b[1] - a[1] for a, b in itertools.pairwise(marks)]}


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


# -- child: Shipyard --------------------------------------------------------------------------

def shipyard_child(config_fields: dict[str, Any], dataset_dir: Path, work: Path
                   ) -> dict[str, Any]:
    """Shipyard's setup and step functions on a 1-process gloo group."""
    from training import distributed
    from training import loop as shipyard_loop
    from training.config import TrainConfig

    rss_after_imports = peak_rss_bytes()
    config = TrainConfig(**config_fields)
    info = distributed.setup(config.collective_timeout_seconds)
    try:
        job = shipyard_loop._setup(config, shipyard_loop.TrainPaths(
            dataset_dir=dataset_dir, output_dir=work / "model", checkpoint_dir=work / "ckpt",
            mlflow_tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
            mlflow_artifact_root=work / "mlartifacts"), info)
        rss_after_setup = peak_rss_bytes()
        initial = _trainable_digest(job.hf_model)
        learning_rates, grad_norms, ends = [], [], []
        job.model.train()
        start = _clock()
        for step in range(config.max_steps):  # `_train`'s loop body without the checkpoint
            started = time.perf_counter()
            outcome = shipyard_loop.train_step(job, step)
            shipyard_loop._record_step(job, step + 1, outcome, time.perf_counter() - started)
            ends.append(_clock())
            learning_rates.append(outcome.learning_rate)
            grad_norms.append(float(outcome.grad_norm))
        if job.mlflow is not None:
            job.mlflow.finish()
        decay = {len(group["params"]) for group in job.optimizer.param_groups
                 if group["weight_decay"] > 0}
        return {
            "losses": job.loss_curve, "learning_rates": learning_rates, "grad_norms": grad_norms,
            **_steps_record(ends, start), "initial_trainable_digest": initial,
            "decay_parameter_count": sum(decay), "optimizer": "torch.optim.AdamW(foreach=True)",
            "num_trainable_parameters": job.num_trainable_parameters,
            "peak_rss_after_imports_bytes": rss_after_imports,
            "peak_rss_after_setup_bytes": rss_after_setup,
        }
    finally:
        distributed.teardown(info)


# -- child: TRL -------------------------------------------------------------------------------

def scheduled_examples(config: Any, dataset_dir: Path) -> list[tuple[list[int], list[int]]]:
    """(token ids, loss mask) of every example Shipyard trains on, in its step order."""
    from common.token_file import open_chat_tokens
    from training.data import BatchSchedule

    tokens = open_chat_tokens(dataset_dir, "train")
    schedule = BatchSchedule(tokens.header.num_examples, config.global_batch_size, config.seed)
    out = []
    for step in range(config.max_steps):
        for i in schedule.global_indices(step).tolist():
            start, end = int(tokens.offsets[i]), int(tokens.offsets[i + 1])
            out.append((tokens.tokens[start:end].astype(int).tolist(),
                        tokens.loss_mask[start:end].astype(int).tolist()))
    return out


def trl_child(config_fields: dict[str, Any], dataset_dir: Path, work: Path) -> dict[str, Any]:
    """TRL's SFTTrainer on Shipyard's batches, schedule and initial weights."""
    import torch
    from datasets import Dataset
    from torch.utils.data import SequentialSampler
    from transformers import AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from training.config import TrainConfig
    from training.data import TOKENIZER_DIR
    from training.loop import lr_factor
    from training.model import build_model

    rss_after_imports = peak_rss_bytes()
    config = TrainConfig(**config_fields)
    rows = scheduled_examples(config, dataset_dir)
    dataset = Dataset.from_dict({"input_ids": [ids for ids, _ in rows],
                                 "assistant_masks": [mask for _, mask in rows]})
    tokenizer = AutoTokenizer.from_pretrained(dataset_dir / TOKENIZER_DIR)
    torch.manual_seed(config.seed)  # as Shipyard's _setup: seed, load, then LoRA's init
    model = build_model(config, tokenizer)
    peft_config = None
    if config.finetune == "lora":
        from training.lora import lora_config

        peft_config = lora_config(config)

    class SameSchedule(SFTTrainer):
        def create_scheduler(self, num_training_steps: int, optimizer: Any = None) -> Any:
            if self.lr_scheduler is None:
                target: Any = optimizer or self.optimizer
                self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                    target, lambda s: lr_factor(s, config))
            return self.lr_scheduler

    recorder = _make_recorder(TrainerCallback)
    trainer: Any = SameSchedule(
        model=model, args=_sft_config(SFTConfig, config, work), train_dataset=dataset,
        processing_class=tokenizer, peft_config=peft_config, callbacks=[recorder])
    rss_after_setup = peak_rss_bytes()
    same = _same_batches(trainer, config, dataset_dir)
    initial = _trainable_digest(trainer.model)
    sampler = trainer._get_train_sampler()
    trainer.train()
    logged = [recorder.logs[s] for s in range(1, config.max_steps + 1)]
    optimizer: Any = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # accelerate
    decay = [group for group in optimizer.param_groups if group["weight_decay"] > 0]
    return {
        "losses": [log["loss"] for log in logged],
        "learning_rates": [log["learning_rate"] for log in logged],
        "grad_norms": [log["grad_norm"] for log in logged],
        **_steps_record(recorder.ends, recorder.start), "initial_trainable_digest": initial,
        "decay_parameter_count": sum(len(group["params"]) for group in decay),
        "optimizer": f"{type(optimizer).__module__}.{type(optimizer).__name__}"
                     f"(fused={optimizer.defaults.get('fused')})",
        "num_trainable_parameters": sum(p.numel() for p in trainer.model.parameters()
                                        if p.requires_grad),
        "same_batches": same, "sequential_sampler": isinstance(sampler, SequentialSampler),
        "model_accepts_loss_kwargs": trainer.model_accepts_loss_kwargs,
        "peak_rss_after_imports_bytes": rss_after_imports,
        "peak_rss_after_setup_bytes": rss_after_setup,
    }


def _sft_config(sft_config: Any, config: Any, work: Path) -> Any:
    return sft_config(
        output_dir=str(work / "trl"), max_steps=config.max_steps,
        per_device_train_batch_size=config.micro_batch_size,
        gradient_accumulation_steps=config.accumulation_steps(1),
        learning_rate=config.learning_rate, warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay, adam_beta1=config.adam_beta1,
        adam_beta2=config.adam_beta2, adam_epsilon=1e-8, max_grad_norm=config.grad_clip_norm,
        seed=config.seed, data_seed=config.seed, train_sampling_strategy="sequential",
        bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=True,
        max_length=None, packing=False, padding_free=False, pad_to_multiple_of=None,
        assistant_only_loss=False, completion_only_loss=False,  # labels from assistant_masks
        logging_strategy="steps", logging_steps=1, save_strategy="no", eval_strategy="no",
        report_to="none", dataloader_num_workers=0,
    )


def _make_recorder(base: type) -> Any:
    class StepRecorder(base):
        """Each step's end (wall, CPU) and each step's logged loss, LR and grad norm."""

        def __init__(self) -> None:
            self.start = _clock()
            self.ends: list[tuple[float, float]] = []
            self.logs: dict[int, dict[str, float]] = {}

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.start = _clock()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.ends.append(_clock())

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None,
                   **kwargs: Any) -> None:
            if logs and "loss" in logs:
                self.logs[state.global_step] = logs

    return StepRecorder()


def _same_batches(trainer: Any, config: Any, dataset_dir: Path) -> bool:
    """Whether TRL's collator, over its prepared dataset in order, builds Shipyard's
    micro-batches: the same tokens, and labels on the same next tokens."""
    import torch

    from training.data import BatchSchedule, load_chat_examples

    pad = trainer.processing_class.pad_token_id
    examples = load_chat_examples(dataset_dir, "train", config.seq_len, pad)
    schedule = BatchSchedule(len(examples), config.global_batch_size, config.seed)
    micro = config.micro_batch_size
    theirs = trainer.train_dataset
    position = 0
    for step in range(config.max_steps):
        for indices in schedule.rank_micro_batches(step, 0, 1, micro):
            ours = examples[indices]
            batch = trainer.data_collator([theirs[i] for i in range(position, position + micro)])
            position += micro
            # TRL's rows are one token longer (the last token, a target only), so its batch
            # is one column wider; Shipyard's padding starts where TRL's last token sits.
            width, real = ours.input_ids.shape[1], ours.attention_mask.bool()  # (B, T)
            if (batch["input_ids"].shape[1] != width + 1
                    or not torch.equal(batch["input_ids"][:, :width][real], ours.input_ids[real])
                    or not torch.equal(batch["attention_mask"].sum(1),
                                       ours.attention_mask.sum(1) + 1)
                    or not torch.equal(batch["labels"][:, 1:], ours.labels)):
                return False
    return True

