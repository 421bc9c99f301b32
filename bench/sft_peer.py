"""Benchmark: Shipyard's trainer against TRL's `SFTTrainer`, same model, data, batches,
hyperparameters and seed, full fine-tuning and LoRA, on CPU.

What a user would otherwise pick for chat SFT is TRL. Both trainers run here on one chat
dataset validated by the real data stage (`data.format: chat`, token file v2), each in its own
fresh child process (no distributed launcher: Shipyard makes its 1-process gloo group itself),
so that each one's peak RSS is its own. What is held equal, and how:

- examples per step: Shipyard's `BatchSchedule` picks each step's examples; TRL gets a dataset
  of exactly those examples, already tokenized from the same token file (`input_ids` +
  `assistant_masks`), in that order, read by a `SequentialSampler`. The TRL child checks, before
  training, that every micro-batch its collator builds has the tokens and labels of Shipyard's
  micro-batch (`same_batches`).
- micro-batch / accumulation: `per_device_train_batch_size` = `train.micro_batch_size`,
  `gradient_accumulation_steps` = global / micro.
- loss: next-token cross-entropy summed over the assistant tokens of the whole global batch,
  divided by their count. Shipyard: `_accumulate_chat_gradients`. TRL: labels are -100 off the
  assistant mask; the model accepts loss kwargs, so transformers passes `num_items_in_batch`
  (the global batch's label count) and TRL's `compute_loss` divides each micro-batch's sum by it
  and skips the division by the accumulation steps: the same definition.
- padding: right padding to the longest example of the micro-batch, pad id = the tokenizer's
  (`pad_to_multiple_of` none). Shipyard feeds an example's first n-1 tokens (the last is only a
  target), TRL all n (the last position predicts nothing): one column more per TRL batch.
- optimizer: AdamW, the same betas, eps 1e-8, weight decay on every >= 2-D weight and none on
  the RMSNorm weights (Shipyard: by dimension, transformers: by name; for Llama the same split,
  checked: `decay_groups_equal`). Implementations differ: Shipyard `foreach=True`, TRL its
  default `adamw_torch_fused`.
- LR: Shipyard's `lr_factor` (linear warmup from lr/warmup, cosine to `min_learning_rate`).
  transformers' `cosine_with_min_lr` warms up from 0 instead (one step behind), so TRL gets the
  same `LambdaLR(lr_factor)` through its `create_scheduler` hook.
- precision, recomputation: fp32 both. TRL's defaults `bf16=True` and
  `gradient_checkpointing=True` are turned off.
- initial weights: the seed, then `training.model.build_model` for both; LoRA adapters
  (PEFT) are made by Shipyard's `with_finetune_method` and by TRL's own `peft_config` path, each
  right after the seeded model load; their digests are compared (`initial_weights_equal`).
  LoRA dropout defaults to 0 here: dropout masks come from each process's RNG stream, which the
  two trainers do not consume identically, so with dropout the curves would differ by design.
- threads: `torch.set_num_threads` the same in both children.

Shipyard runs its real setup and step functions (`training.loop._setup`, `train_step`,
`_record_step`: data, model, optimizer, scheduler, MLflow logging to sqlite), not the end of
`run_training` (final checkpoint and model export), which TRL's run (`save_strategy="no"`)
has no counterpart of; TRL logs nowhere (`report_to="none"`). Shipyard validates on its final
step; the first step (warm-up) and the final step are left out of the timing of both.

Timing: a step is from the end of the previous step to the end of this one (data, forward,
backward, clip, update, logging), wall and process CPU time (all threads). Tokens per second
count the assistant (loss) tokens, and the example tokens (non-pad, as validate_data counted
them); both trainers process the same examples in each step, so the ratio shipyard / trl
(goal >= 1.0) is the same on either basis; it is reported on loss tokens. On a shared machine
the CPU-time ratio is the steadier one.

Prints one JSON object.

    python -m bench.sft_peer [--steps 6] [--finetune full|lora|both] [--model-dir DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TypeVar

from common.settings import PROJECT_ROOT

# fp32 on both sides with reduction orders that differ (batch widths, TRL's tiled LM head,
# fused vs foreach AdamW): agreement to ~1e-6 relative is expected; a loss differing by more
# than this, relative, at any step means the two trainers do not train the same thing.
LOSS_RELATIVE_TOLERANCE = 1e-4
GOAL_TOKENS_PER_SECOND_RATIO = 1.0
T = TypeVar("T")
CHAT_DIR = PROJECT_ROOT / "data" / "chat"
TRAINERS = ("shipyard", "trl")
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "GX_ANALYTICS_ENABLED": "false", "TOKENIZERS_PARALLELISM": "false"}


# -- settings ---------------------------------------------------------------------------------

def bench_config(args: argparse.Namespace, finetune: str, model_dir: Path) -> dict[str, Any]:
    """The TrainConfig fields of one run (the smol preset's batch and schedule by default)."""
    return {
        "base_model_dir": str(model_dir), "finetune": finetune, "max_steps": args.steps,
        "global_batch_size": args.global_batch_size, "micro_batch_size": args.micro_batch_size,
        "seq_len": args.seq_len, "learning_rate": args.learning_rate,
        "min_learning_rate": args.min_learning_rate, "warmup_steps": args.warmup_steps,
        "weight_decay": args.weight_decay, "lora_dropout": args.lora_dropout,
        "seed": args.seed, "mixed_precision": "fp32", "compile": False,
        # validation once, on the final step (left out of the timing); checkpoints are not
        # written by the step functions this drives
        "eval_every_steps": args.steps, "eval_batches": 1, "checkpoint_every_steps": args.steps,
    }


def _peak_rss_bytes() -> int:
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

    rss_after_imports = _peak_rss_bytes()
    config = TrainConfig(**config_fields)
    info = distributed.setup(config.collective_timeout_seconds)
    try:
        job = shipyard_loop._setup(config, shipyard_loop.TrainPaths(
            dataset_dir=dataset_dir, output_dir=work / "model", checkpoint_dir=work / "ckpt",
            mlflow_tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
            mlflow_artifact_root=work / "mlartifacts"), info)
        rss_after_setup = _peak_rss_bytes()
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

    rss_after_imports = _peak_rss_bytes()
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
    rss_after_setup = _peak_rss_bytes()
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


# -- parent -----------------------------------------------------------------------------------

def run_child(trainer: str, config_fields: dict[str, Any], dataset_dir: Path, work: Path,
              threads: int) -> dict[str, Any]:
    """One trainer's run in a fresh process; its numbers, wall time and load around it."""
    work.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "bench.sft_peer", "--child", trainer,
               "--child-config", json.dumps(config_fields), "--dataset-dir", str(dataset_dir),
               "--work-dir", str(work), "--threads", str(threads)]
    env = {**os.environ, **OFFLINE_ENV, "PYTHONPATH": str(PROJECT_ROOT)}
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the {trainer} child failed:\n{done.stderr[-4000:]}")
    child = json.loads(done.stdout.strip().splitlines()[-1])
    return {**child, "process_wall_seconds": round(time.perf_counter() - started, 2),
            "load_average_1min_before_after": [round(load_before, 2),
                                               round(os.getloadavg()[0], 2)]}


def _round(index: int, fields: dict[str, Any], dataset_dir: Path, work: Path, threads: int
           ) -> dict[str, dict[str, Any]]:
    """Both trainers once; odd rounds run TRL first, so neither always has the later
    (warmer or more loaded) slot."""
    order = TRAINERS if index % 2 == 0 else TRAINERS[::-1]
    runs = {}
    for trainer in order:
        runs[trainer] = run_child(trainer, fields, dataset_dir, work / trainer, threads)
        print(f"[sft_peer] {fields['finetune']} round {index} {trainer}: "
              f"{runs[trainer]['process_wall_seconds']} s, "
              f"losses {[round(x, 5) for x in runs[trainer]['losses']]}",
              file=sys.stderr, flush=True)
    return runs


def step_tokens(config_fields: dict[str, Any], dataset_dir: Path) -> dict[str, list[int]]:
    """Loss (assistant) tokens and example tokens of each step's global batch."""
    from training.config import TrainConfig

    config = TrainConfig(**config_fields)
    rows = scheduled_examples(config, dataset_dir)
    per_step = config.global_batch_size
    chunks = [rows[i:i + per_step] for i in range(0, len(rows), per_step)]
    return {"loss_tokens": [sum(sum(mask[1:]) for _, mask in chunk) for chunk in chunks],
            "example_tokens": [sum(len(ids) for ids, _ in chunk) for chunk in chunks]}


def _steady(values: list[T]) -> list[T]:
    """Leave out the first step (warm-up) and the last (Shipyard validates there)."""
    return values[1:-1] if len(values) >= 3 else values


def throughput(runs: list[dict[str, Any]], tokens: dict[str, list[int]]) -> dict[str, float]:
    """Tokens per wall and per CPU second over the steady steps of every round."""
    wall = [s for run in runs for s in _steady(run["step_seconds"])]
    cpu = [s for run in runs for s in _steady(run["step_cpu_seconds"])]
    loss = sum(_steady(tokens["loss_tokens"])) * len(runs)
    example = sum(_steady(tokens["example_tokens"])) * len(runs)
    return {
        "steady_steps": len(wall), "steady_wall_seconds": sum(wall),
        "steady_cpu_seconds": sum(cpu),
        "loss_tokens_per_second": loss / sum(wall),
        "example_tokens_per_second": example / sum(wall),
        "loss_tokens_per_cpu_second": loss / sum(cpu),
        "example_tokens_per_cpu_second": example / sum(cpu),
    }


def _max_difference(ours: list[float], theirs: list[float], relative: bool) -> float:
    return max(abs(a - b) / (max(abs(b), 1e-12) if relative else 1.0)
               for a, b in zip(ours, theirs, strict=True))


def compare(rounds: list[dict[str, dict[str, Any]]], tokens: dict[str, list[int]]
            ) -> dict[str, Any]:
    """Loss curves (of the first round; every round must repeat them exactly), throughput
    (all rounds) and peak RSS (the largest of the rounds) of one fine-tuning method."""
    first = rounds[0]
    ours, theirs = first["shipyard"], first["trl"]
    worst = _max_difference(ours["losses"], theirs["losses"], relative=True)
    speed = {trainer: throughput([r[trainer] for r in rounds], tokens) for trainer in TRAINERS}
    ratio = (speed["shipyard"]["loss_tokens_per_second"]
             / speed["trl"]["loss_tokens_per_second"])
    return {
        "losses": {"shipyard": ours["losses"], "trl": theirs["losses"]},
        "max_abs_loss_difference": _max_difference(ours["losses"], theirs["losses"], False),
        "max_relative_loss_difference": worst,
        "loss_relative_tolerance": LOSS_RELATIVE_TOLERANCE,
        "losses_within_tolerance": worst <= LOSS_RELATIVE_TOLERANCE,
        "losses_repeat_exactly_across_rounds": all(
            r[t]["losses"] == first[t]["losses"] for r in rounds for t in TRAINERS),
        "max_abs_learning_rate_difference": _max_difference(
            ours["learning_rates"], theirs["learning_rates"], relative=False),
        "max_relative_grad_norm_difference": _max_difference(
            ours["grad_norms"], theirs["grad_norms"], relative=True),
        "initial_weights_equal": (ours["initial_trainable_digest"]
                                  == theirs["initial_trainable_digest"]),
        "decay_groups_equal": ours["decay_parameter_count"] == theirs["decay_parameter_count"],
        "tokens_per_step": tokens,
        "throughput": speed,
        "ratio_basis": "loss (assistant) tokens per second over the steady steps; both "
                       "trainers process the same examples per step, so the example-token "
                       "ratio is the same",
        "tokens_per_second_ratio_shipyard_over_trl": ratio,
        "tokens_per_cpu_second_ratio_shipyard_over_trl": (
            speed["shipyard"]["loss_tokens_per_cpu_second"]
            / speed["trl"]["loss_tokens_per_cpu_second"]),
        "goal_ratio": GOAL_TOKENS_PER_SECOND_RATIO,
        "meets_goal": ratio >= GOAL_TOKENS_PER_SECOND_RATIO,
        "peak_rss_bytes": {t: max(r[t]["peak_rss_bytes"] for r in rounds) for t in TRAINERS},
        "runs": rounds,
    }


def prepare(model_dir: Path | None, dataset_dir: Path | None, work: Path
            ) -> tuple[Path, Path]:
    """The model (the tiny chat model unless given) and the shipped chat splits validated by
    the real data stage with its tokenizer (unless a validated dataset is given)."""
    if model_dir is None:
        from testing.tiny_chat_model import build_tiny_chat_model

        model_dir = build_tiny_chat_model(work / "tiny-chat-model")
    if dataset_dir is None:
        from data.config import DataConfig
        from data.stage import validate_dataset

        dataset_dir = validate_dataset(DataConfig(
            format="chat", base_model_dir=str(model_dir), max_example_tokens=256,
            train_path=str(CHAT_DIR / "train.jsonl"),
            validation_path=str(CHAT_DIR / "validation.jsonl"),
            eval_path=str(CHAT_DIR / "eval.jsonl")), work / "dataset").output_dir
    return model_dir, dataset_dir


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("torch", "transformers", "trl", "peft")}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.sft_peer")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--finetune", choices=("full", "lora", "both"), default="both")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="a local HF Llama directory (default: the tiny chat model)")
    parser.add_argument("--dataset-dir", type=Path, default=None,
                        help="a chat dataset validate_data wrote with --model-dir's tokenizer "
                             "(default: the shipped data/chat splits, validated here)")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of each trainer (default: torch's default here; "
                             "on a shared machine use 1: OpenMP threads spin while they wait, "
                             "so with more, CPU time measures the neighbours too)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs of each trainer, alternating which goes first; throughput "
                             "pools the rounds")
    parser.add_argument("--global-batch-size", type=int, default=16)
    parser.add_argument("--micro-batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--min-learning-rate", type=float, default=1e-5)
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--lora-dropout", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--child", choices=TRAINERS, help=argparse.SUPPRESS)
    parser.add_argument("--child-config", help=argparse.SUPPRESS)
    return parser


def _child_main(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    run = shipyard_child if args.child == "shipyard" else trl_child
    result = run(json.loads(args.child_config), args.dataset_dir, args.work_dir)
    result.update(peak_rss_bytes=_peak_rss_bytes(), torch_threads=torch.get_num_threads())
    print(json.dumps(result), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.child:
        return _child_main(args)
    import torch

    threads = args.threads or torch.get_num_threads()
    methods = ["full", "lora"] if args.finetune == "both" else [args.finetune]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="shipyard-sft-peer-") as tmp:
        work = args.work_dir or Path(tmp)
        model_dir, dataset_dir = prepare(args.model_dir, args.dataset_dir, work)
        results = {}
        for method in methods:
            fields = bench_config(args, method, model_dir)
            rounds = [_round(index, fields, dataset_dir, work / f"{method}-{index}", threads)
                      for index in range(args.rounds)]
            results[method] = compare(rounds, step_tokens(fields, dataset_dir))
            results[method]["settings"] = fields
    report = {
        "benchmark": "sft_peer",
        "model_dir": str(model_dir) if args.model_dir else "testing.tiny_chat_model",
        "steps": args.steps, "threads": threads, "cpu_count": os.cpu_count(),
        "machine": platform.machine(), "python": platform.python_version(), **_versions(),
        "settings": {k: v for k, v in vars(args).items()
                     if k not in ("child", "child_config", "work_dir", "dataset_dir")
                     and not isinstance(v, Path)} | dataclasses.asdict(_Fixed()),
        "results": results,
        "total_wall_seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(report, indent=1, default=str))
    return 0


@dataclasses.dataclass(frozen=True)
class _Fixed:
    """Settings of the comparison that no option changes."""

    precision: str = "fp32 (TRL: bf16=False)"
    gradient_checkpointing: str = "off (TRL: gradient_checkpointing=False)"
    padding: str = "right, to the longest example of the micro-batch"
    loss: str = "sum over assistant tokens / assistant tokens of the global batch"
    lr_schedule: str = "Shipyard's lr_factor for both (TRL via create_scheduler)"
    adam_epsilon: float = 1e-8
    data_order: str = "Shipyard's BatchSchedule; TRL: the same examples pre-ordered, sequential"


if __name__ == "__main__":
    raise SystemExit(main())
