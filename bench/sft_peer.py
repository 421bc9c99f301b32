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

Prints one JSON object. This module is the parent (settings, child processes, report); the
children's code is bench/sft_peer_trainers.py, the comparison bench/sft_peer_compare.py.

    python -m bench.sft_peer [--steps 6] [--finetune full|lora|both] [--model-dir DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.sft_peer_compare import TRAINERS, compare, step_tokens
from bench.sft_peer_trainers import peak_rss_bytes, shipyard_child, trl_child
from common.settings import PROJECT_ROOT

CHAT_DIR = PROJECT_ROOT / "data" / "chat"
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
    result.update(peak_rss_bytes=peak_rss_bytes(), torch_threads=torch.get_num_threads())
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
