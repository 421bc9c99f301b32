"""Chat SFT on the tiny SmolLM2-shaped chat model: one example per sequence, loss on assistant
tokens only, and a step loss that is the mean over every loss token of the global batch
whatever the world size, micro-batch size and accumulation.

Tolerances: padding to a micro-batch's longest example changes matmul shapes, hence float
summation order; the loss of a padded batch agrees with a per-example, unpadded computation
to about 1e-6 relative (bound 1e-5). Runs at world size 1 and 2 agree as the packed path's do
(bound 1e-4 absolute, tests/training/test_training_runs.py).
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, LlamaForCausalLM, PreTrainedTokenizerBase

from common.errors import StageError
from common.token_file import (
    ChatTokenFileWriter,
    TokenFileWriter,
    header_name,
    open_chat_tokens,
    tokens_name,
)
from data import chat
from tests.training.chat_fixtures import (  # noqa: F401 (fixtures)
    read_chat_split,
    small_chat_dataset_dir,
    tiny_chat_model_dir,
)
from tests.training.conftest import RankRun, run_ranks
from training import distributed
from training.data import (
    IGNORE_INDEX,
    BatchSchedule,
    ChatExamples,
    is_chat_dataset,
    load_chat_examples,
)
from training.loop import _accumulate_chat_gradients, _chat_loss_sum

PADDED_TOLERANCE = 1e-5
RANKS_TOLERANCE = 1e-4
CHAT_TRAIN: dict[str, Any] = {
    "seq_len": 256, "global_batch_size": 4, "max_steps": 2, "warmup_steps": 1,
    "learning_rate": 1e-3, "min_learning_rate": 1e-4, "eval_every_steps": 2, "eval_batches": 2,
    "checkpoint_every_steps": 2}


@pytest.fixture(scope="module")
def tokenizer(tiny_chat_model_dir: Path) -> PreTrainedTokenizerBase:  # noqa: F811
    return AutoTokenizer.from_pretrained(tiny_chat_model_dir)


@pytest.fixture(scope="module")
def model(tiny_chat_model_dir: Path) -> LlamaForCausalLM:  # noqa: F811
    return LlamaForCausalLM.from_pretrained(tiny_chat_model_dir, torch_dtype=torch.float32)


@pytest.fixture(scope="module")
def conversations() -> list[list[dict[str, str]]]:
    """Shipped rows of different lengths: with and without a system message, two-turn."""
    rows = [r["messages"] for r in read_chat_split("train")]
    with_system = next(m for m in rows if m[0]["role"] == "system")
    two_turn = next(m for m in rows if len(m) >= 4)
    return [rows[0], with_system, two_turn, rows[2]]


@pytest.fixture(scope="module")
def token_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerBase,
              conversations: list[list[dict[str, str]]]) -> Path:
    """A v2 token file of `conversations`, written as validate_data writes it."""
    directory = tmp_path_factory.mktemp("chat-tokens")
    with ChatTokenFileWriter(directory, "train", len(tokenizer), "d" * 64) as writer:
        encoded = [chat.encode_conversation(tokenizer, m) for m in conversations]
        writer.append([(e.ids, e.loss_mask) for e in encoded])
        writer.close()
    return directory


@pytest.fixture(scope="module")
def examples(token_dir: Path, tokenizer: PreTrainedTokenizerBase) -> ChatExamples:
    return load_chat_examples(token_dir, "train", 256, tokenizer.pad_token_id)


def _hand_loss(model: LlamaForCausalLM, examples: ChatExamples, indices: list[int]
               ) -> tuple[float, int]:
    """Summed cross-entropy over the assistant tokens of each example, unpadded, one at a
    time, straight from the token file's ids and mask; and the number of those tokens."""
    total, count = 0.0, 0
    with torch.no_grad():
        for i in indices:
            start, end = int(examples._offsets[i]), int(examples._offsets[i + 1])
            ids = torch.tensor(examples._tokens[start:end].astype(np.int64))
            is_label = torch.tensor(examples._mask[start:end].astype(bool))
            logits = model(input_ids=ids[None, :-1]).logits[0]  # (n - 1, V)
            positions = torch.nonzero(is_label[1:]).flatten()  # position p predicts token p + 1
            log_probs = F.log_softmax(logits[positions].double(), dim=-1)
            total -= float(log_probs.gather(1, ids[positions + 1][:, None]).sum())
            count += len(positions)
    return total, count


@pytest.mark.unit
def test_a_batch_is_one_example_per_row_right_padded_with_labels_on_assistant_tokens(
    examples: ChatExamples, tokenizer: PreTrainedTokenizerBase,
    conversations: list[list[dict[str, str]]],
) -> None:
    batch = examples[torch.tensor([0, 2])]
    lengths = [len(chat.encode_conversation(tokenizer, conversations[i]).ids) for i in (0, 2)]
    assert batch.input_ids.shape == (2, max(lengths) - 1)
    for row, (i, length) in enumerate(zip((0, 2), lengths, strict=True)):
        encoded = chat.encode_conversation(tokenizer, conversations[i])
        assert batch.input_ids[row, :length - 1].tolist() == encoded.ids[:-1]
        assert batch.attention_mask[row].tolist() == [1] * (length - 1) + [0] * (
            batch.input_ids.shape[1] - length + 1)
        labels = batch.labels[row]
        assert (labels[length - 1:] == IGNORE_INDEX).all()  # padding
        targets = labels[labels != IGNORE_INDEX].tolist()
        answers = [m["content"] for m in conversations[i] if m["role"] == "assistant"]
        assert tokenizer.decode(targets) == "<|im_end|>".join(answers) + "<|im_end|>"
    assert batch.num_loss_tokens == sum(
        sum(chat.encode_conversation(tokenizer, conversations[i]).loss_mask) for i in (0, 2))


@pytest.mark.unit
def test_loss_is_the_cross_entropy_over_assistant_tokens_only(
    model: LlamaForCausalLM, examples: ChatExamples,
) -> None:
    indices = [0, 1, 2, 3]
    batch = examples[torch.tensor(indices)]
    with torch.no_grad():
        loss_sum = float(_chat_loss_sum(model, batch, torch.device("cpu"), nullcontext()))
    hand_sum, hand_count = _hand_loss(model, examples, indices)
    assert batch.num_loss_tokens == hand_count
    assert loss_sum / batch.num_loss_tokens == pytest.approx(hand_sum / hand_count,
                                                              rel=PADDED_TOLERANCE)


@pytest.mark.unit
def test_prompt_positions_contribute_exactly_nothing_to_loss_or_gradients(
    model: LlamaForCausalLM, examples: ChatExamples,
) -> None:
    """Replace the logits at every non-label position (system, user, headers, padding) with
    noise: the loss and every gradient stay bit-identical."""
    batch = examples[torch.tensor([0, 1, 2, 3])]
    not_label = batch.labels == IGNORE_INDEX  # (B, T)

    def loss_and_grads() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        loss = _chat_loss_sum(model, batch, torch.device("cpu"), nullcontext())
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                               if p.grad is not None}

    clean_loss, clean_grads = loss_and_grads()
    generator = torch.Generator().manual_seed(0)

    def scramble(_module: Any, _inputs: Any, logits: torch.Tensor) -> torch.Tensor:
        noise = 50 * torch.randn(logits.shape, generator=generator)
        return torch.where(not_label[..., None], logits + noise, logits)

    handle = model.lm_head.register_forward_hook(scramble)
    try:
        noisy_loss, noisy_grads = loss_and_grads()
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
    assert torch.equal(clean_loss, noisy_loss)
    assert clean_grads.keys() == noisy_grads.keys() and clean_grads
    for name, grad in clean_grads.items():
        assert torch.equal(grad, noisy_grads[name]), name


@pytest.mark.unit
def test_accumulated_loss_and_gradient_are_the_global_token_mean(
    model: LlamaForCausalLM, examples: ChatExamples,
) -> None:
    """One micro-batch of 4 and 4 micro-batches of 1 give the same step loss and gradients:
    the token mean of the whole batch, not the mean of the micro-batches' means."""
    info = distributed.setup(60)
    try:
        job = SimpleNamespace(model=model, info=info, autocast=nullcontext())

        def step(micro_batches: list[torch.Tensor]) -> tuple[float, list[torch.Tensor]]:
            model.zero_grad(set_to_none=True)
            loss = _accumulate_chat_gradients(job, examples, micro_batches)  # type: ignore[arg-type]
            return loss, [grad.clone() for p in model.parameters()
                          if (grad := p.grad) is not None]

        whole_loss, whole_grads = step([torch.tensor([0, 1, 2, 3])])
        split_loss, split_grads = step([torch.tensor([i]) for i in range(4)])
        model.zero_grad(set_to_none=True)
    finally:
        distributed.teardown(info)
    hand_sum, hand_count = _hand_loss(model, examples, [0, 1, 2, 3])
    assert whole_loss == pytest.approx(hand_sum / hand_count, rel=PADDED_TOLERANCE)
    assert split_loss == pytest.approx(whole_loss, rel=PADDED_TOLERANCE)
    for whole, split in zip(whole_grads, split_grads, strict=True):
        assert torch.allclose(whole, split, rtol=1e-4, atol=1e-7)
    per_example = [_hand_loss(model, examples, [i]) for i in range(4)]
    mean_of_means = sum(s / c for s, c in per_example) / 4
    assert abs(mean_of_means - whole_loss) > 100 * PADDED_TOLERANCE * whole_loss  # not that


@pytest.mark.unit
def test_an_example_longer_than_seq_len_is_refused_not_truncated(
    examples: ChatExamples, token_dir: Path,
) -> None:
    with pytest.raises(StageError) as caught:
        load_chat_examples(token_dir, "train", examples.longest - 2, 2)
    assert caught.value.code == "TRAIN_EXAMPLE_TOO_LONG"
    assert "train.seq_len" in caught.value.message
    fits = load_chat_examples(token_dir, "train", examples.longest - 1, 2)
    assert fits.longest == examples.longest


@pytest.mark.unit
def test_the_v2_file_round_trips_and_v1_headers_are_unchanged(tmp_path: Path) -> None:
    with ChatTokenFileWriter(tmp_path, "train", 512, "d" * 64) as writer:
        writer.append([([1, 5, 7, 2], [0, 0, 1, 1]), ([1, 9, 2], [0, 1, 1])])
        writer.append([([1, 3, 3, 3, 2], [0, 0, 0, 1, 1])])
        writer.close()
    tokens = open_chat_tokens(tmp_path, "train")
    assert tokens.tokens.tolist() == [1, 5, 7, 2, 1, 9, 2, 1, 3, 3, 3, 2]
    assert tokens.loss_mask.tolist() == [0, 0, 1, 1, 0, 1, 1, 0, 0, 0, 1, 1]
    assert tokens.offsets.tolist() == [0, 4, 7, 12]
    assert tokens.header.num_loss_tokens == 6 and tokens.header.num_examples == 3
    assert is_chat_dataset(tmp_path)
    path = tmp_path / tokens_name("train")
    path.write_bytes(path.read_bytes()[:-8])  # one offset short
    with pytest.raises(StageError) as caught:
        open_chat_tokens(tmp_path, "train")
    assert caught.value.code == "TOKEN_FILE_INVALID"
    v1 = tmp_path / "v1"
    v1.mkdir()
    with TokenFileWriter(v1, "train", 512, "d" * 64) as plain:
        plain.append([1, 2], 1)
        plain.close()
    assert sorted(json.loads((v1 / header_name("train")).read_text())) == [
        "dtype", "format", "num_examples", "num_tokens", "tokenizer_digest", "vocab_size"]
    assert not is_chat_dataset(v1)


@pytest.mark.unit
def test_the_schedule_indexes_examples_as_a_pure_function_of_seed_and_step(
    examples: ChatExamples,
) -> None:
    schedule = BatchSchedule(len(examples), 4, seed=7)
    assert sorted(schedule.global_indices(0).tolist()) == [0, 1, 2, 3]  # one epoch, permuted
    assert torch.equal(schedule.global_indices(3), BatchSchedule(4, 4, 7).global_indices(3))


# -- end to end through training.launch under torchrun ------------------------------------------

@pytest.fixture(scope="module")
def chat_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chat-train-home")


def _run(nproc: int, overrides: dict[str, Any], dataset: Path, model_dir: Path, work: Path,
         home: Path) -> RankRun:
    config = {**CHAT_TRAIN, "base_model_dir": str(model_dir), **overrides}
    run = run_ranks(nproc, config, dataset, work, home)
    assert run.returncode == 0, run.output[-3000:]
    assert run.result is not None
    return run


@pytest.fixture(scope="module")
def one_rank(small_chat_dataset_dir: Path, tiny_chat_model_dir: Path,  # noqa: F811
             chat_home: Path, tmp_path_factory: pytest.TempPathFactory) -> RankRun:
    # 1 rank x 2 micro-steps of 2 examples
    return _run(1, {"micro_batch_size": 2}, small_chat_dataset_dir, tiny_chat_model_dir,
                tmp_path_factory.mktemp("chat-ws1"), chat_home)


@pytest.fixture(scope="module")
def two_rank_ddp(small_chat_dataset_dir: Path, tiny_chat_model_dir: Path,  # noqa: F811
                 chat_home: Path, tmp_path_factory: pytest.TempPathFactory) -> RankRun:
    # 2 ranks x 2 micro-steps of 1 example
    return _run(2, {"micro_batch_size": 1}, small_chat_dataset_dir, tiny_chat_model_dir,
                tmp_path_factory.mktemp("chat-ws2"), chat_home)


@pytest.mark.integration
def test_step_loss_is_the_global_token_mean_at_world_size_one_and_two(
    one_rank: RankRun, two_rank_ddp: RankRun, small_chat_dataset_dir: Path,  # noqa: F811
    model: LlamaForCausalLM,
) -> None:
    assert one_rank.result and two_rank_ddp.result
    one, two = one_rank.result["loss_curve"], two_rank_ddp.result["loss_curve"]
    assert len(one) == CHAT_TRAIN["max_steps"]
    assert max(abs(a - b) for a, b in zip(one, two, strict=True)) < RANKS_TOLERANCE
    # Step 1's loss is the untrained model's token mean over step 0's global batch.
    examples = load_chat_examples(small_chat_dataset_dir, "train", 256, 2)
    schedule = BatchSchedule(len(examples), CHAT_TRAIN["global_batch_size"], seed=1234)
    hand_sum, hand_count = _hand_loss(model, examples, schedule.global_indices(0).tolist())
    assert one[0] == pytest.approx(hand_sum / hand_count, rel=PADDED_TOLERANCE)
    # validation: the same 4 examples on both (eval_batches x world x micro), assistant only
    final = str(CHAT_TRAIN["max_steps"])
    assert one_rank.result["val_losses"][final] == pytest.approx(
        two_rank_ddp.result["val_losses"][final], abs=RANKS_TOLERANCE)


@pytest.mark.integration
def test_fsdp_trains_the_chat_dataset_like_ddp(
    small_chat_dataset_dir: Path, tiny_chat_model_dir: Path,  # noqa: F811
    chat_home: Path, tmp_path: Path, two_rank_ddp: RankRun,
) -> None:
    # 2 ranks x 1 micro-step of 2 examples, parameters sharded
    fsdp = _run(2, {"micro_batch_size": 2, "parallelism": "fsdp"}, small_chat_dataset_dir,
                tiny_chat_model_dir, tmp_path, chat_home)
    assert fsdp.result and two_rank_ddp.result
    diffs = [abs(a - b) for a, b in zip(fsdp.result["loss_curve"],
                                        two_rank_ddp.result["loss_curve"], strict=True)]
    assert max(diffs) < RANKS_TOLERANCE
    exported = AutoTokenizer.from_pretrained(fsdp.output_dir)
    assert "<|im_start|>" in exported.chat_template  # served with the template it learned
    assert LlamaForCausalLM.from_pretrained(fsdp.output_dir).config.tie_word_embeddings
