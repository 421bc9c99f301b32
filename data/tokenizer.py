"""The tokenizer the model is trained with: a byte-level BPE trained on the train split, or the
tokenizer of `DataConfig.base_model_dir`.

Either way the saved tokenizer carries the chat template that renders `PROMPT_TEMPLATE`,
because that is the format the model is fine-tuned on; an OpenAI-style chat request served by
vLLM then reaches the model in the same shape as its training examples.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from common.errors import StageError
from common.template import PROMPT_TEMPLATE, format_example

BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"
# Order fixes the ids: unk=0, bos=1, eos=2 as in Llama tokenizers, then pad=3.
SPECIAL_TOKENS = (UNK_TOKEN, BOS_TOKEN, EOS_TOKEN, PAD_TOKEN)
# Texts per call into the Rust tokenizer (bounds the Encoding objects alive at once).
ENCODE_BATCH = 4096
# A byte-level BPE starts from all 256 bytes; below this there is no room for any merge.
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)


def _jinja_literal(text: str) -> str:
    # JSON's escapes (\n, \", \uXXXX) are also Jinja string-literal escapes. Emitting the
    # template text as an expression keeps Jinja's whitespace control from eating its newlines.
    return "{{ " + json.dumps(text) + " }}"


def chat_template() -> str:
    """Jinja chat template: exactly one user turn rendered with `PROMPT_TEMPLATE`.

    Renders ``bos + PROMPT_TEMPLATE(user content)`` and, when an assistant turn follows (a
    training-style conversation), ``content + eos``. The prompt already ends with the response
    header, so ``add_generation_prompt`` needs nothing extra.
    """
    prefix, suffix = PROMPT_TEMPLATE.split("{prompt}")
    return (
        "{%- if messages | selectattr('role', 'equalto', 'user') | list | length != 1 -%}"
        "{{ raise_exception('This model takes exactly one user message per conversation.') }}"
        "{%- endif -%}"
        "{{ bos_token }}"
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'user' -%}"
        + _jinja_literal(prefix) + "{{ message['content'] }}" + _jinja_literal(suffix)
        + "{%- elif message['role'] == 'assistant' -%}"
        "{{ message['content'] }}{{ eos_token }}"
        "{%- else -%}"
        "{{ raise_exception('Only user and assistant messages are supported, got ' "
        "+ message['role'] + '.') }}"
        "{%- endif -%}"
        "{%- endfor -%}"
    )


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE over `texts`; the same texts give byte-identical saved files."""
    if vocab_size < MIN_VOCAB_SIZE:
        raise StageError(
            "CONFIG_INVALID",
            f"data.tokenizer_vocab_size={vocab_size}: a byte-level BPE needs at least "
            f"{MIN_VOCAB_SIZE} (256 bytes + {len(SPECIAL_TOKENS)} special tokens). Raise it.",
        )
    core = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        # Every byte is in the vocabulary from the start, so no text is ever unencodable.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    # Prepend BOS on every encode with special tokens, as a Llama tokenizer does; EOS is part
    # of the formatted training text instead, so prompts at inference time stay open-ended.
    bos_id = core.token_to_id(BOS_TOKEN)
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B:1",
        special_tokens=[(BOS_TOKEN, bos_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        chat_template=chat_template(),
    )


def load_base_tokenizer(model_dir: Path, *, keep_chat_template: bool = False
                        ) -> PreTrainedTokenizerBase:
    """The tokenizer saved in a local model directory (never the Hub), with our chat template,
    or with the model's own one when `keep_chat_template` (chat-format data is rendered with
    it, and serving must render requests the same way)."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise StageError(
            "DATA_TOKENIZER_INVALID",
            f"data.base_model_dir={str(model_dir)!r}: no loadable tokenizer there "
            f"({type(exc).__name__}: {exc}). Point it at a directory written by "
            "`save_pretrained` (tokenizer.json + tokenizer_config.json), or unset it to train one.",
        ) from exc
    if tokenizer.eos_token is None:
        raise StageError(
            "DATA_TOKENIZER_INVALID",
            f"data.base_model_dir={str(model_dir)!r}: the tokenizer has no eos_token, so a "
            "training example cannot mark its end. Use a tokenizer that defines one.",
        )
    # Loading options transformers records in init_kwargs would be saved with the copy and
    # bind every later loader to them; the published tokenizer must not depend on how we read it.
    for loading_option in ("local_files_only", "is_local"):
        tokenizer.init_kwargs.pop(loading_option, None)
    if not keep_chat_template:
        tokenizer.chat_template = chat_template()
    return tokenizer


def count_example_tokens(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], responses: Sequence[str]
) -> list[int]:
    """Tokens of each formatted training example, BOS and EOS included (what training sees)."""
    texts = [format_example(p, r, tokenizer.eos_token) for p, r in zip(prompts, responses,
                                                                        strict=True)]
    if not texts:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # The Rust tokenizer directly: the Python wrapper converts every encoding to lists and
        # masks we do not need, which is about half the stage's tokenizing time. In batches:
        # an Encoding object is about a kilobyte, so a whole chunk's at once would dominate
        # the stage's peak memory.
        return [len(e.ids) for start in range(0, len(texts), ENCODE_BATCH)
                for e in backend.encode_batch_fast(texts[start:start + ENCODE_BATCH],
                                                   add_special_tokens=True)]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(directory))
