"""Train the text tokenizer of a MedDiff model with Hugging Face `tokenizers`.

The tokenizer is byte-level BPE (any text encodes, nothing is ever `<|unk|>`), with digits split one by
one and punctuation isolated so box text such as `<box>[12,345,678,999]</box>` becomes
`<box> [ 1 2 , 3 4 5 , ... ] </box>`. `SPECIAL_TOKENS + TEXT_TAG_TOKENS` take ids 0..16 in that order
(`docs/internals.md`); the tags (`<think>`, `<answer>`, `<box>` ...) are single tokens that survive
`skip_special_tokens=True`, the special tokens do not.

>>> tok = train_text_tokenizer(["Findings: nodule <box>[12,345,678,999]</box>."] * 4, vocab_size=300)
>>> tok.convert_ids_to_tokens(list(range(5)))
['<|pad|>', '<|bos|>', '<|eos|>', '<|unk|>', '<|mask|>']
>>> tok.decode(tok("<box>[12,345,678,999]</box>")["input_ids"])
'<box>[12,345,678,999]</box>'
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from .constants import (
    ASSISTANT_TOKEN,
    BOS_TOKEN,
    DEFAULT_TOKEN_IDS,
    EOI_TOKEN,
    EOS_TOKEN,
    MASK_TOKEN,
    PAD_TOKEN,
    SOI_TOKEN,
    SPECIAL_TOKENS,
    TEXT_TAG_TOKENS,
    UNK_TOKEN,
    USER_TOKEN,
)

__all__ = ["CHAT_TEMPLATE", "train_text_tokenizer", "texts_from_dataset"]

# Text-only chat rendering in the MedDiff layout: `<|bos|> <|user|> question <|assistant|> answer <|eos|>`.
# Image parts of a message render as an empty `<|soi|><|eoi|>` slot; MedDiffProcessor builds the real
# multimodal sequences (with the image tokens) itself.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{%- set text = message['content'] -%}"
    "{%- else -%}{%- set text = namespace(value='') -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{%- set text.value = text.value + part['text'] -%}"
    "{%- elif part['type'] == 'image' -%}{%- set text.value = text.value + '"
    + SOI_TOKEN
    + EOI_TOKEN
    + "' -%}"
    "{%- endif -%}{%- endfor -%}{%- set text = text.value -%}{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}" + ASSISTANT_TOKEN + "{{ text }}{{ eos_token }}"
    "{%- else -%}" + USER_TOKEN + "{{ text }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}" + ASSISTANT_TOKEN + "{%- endif -%}"
)

_TEXT_COLUMNS = ("question", "options", "answer", "report", "rationale")


def texts_from_dataset(dataset: Any, columns: Iterable[str] = _TEXT_COLUMNS) -> Iterator[str]:
    """All text of a canonical dataset (questions, options, answers, reports, rationales), one string each."""
    names = set(getattr(dataset, "column_names", []) or [])
    for column in columns:
        if column not in names:
            continue
        for value in dataset[column]:
            if isinstance(value, (list, tuple)):
                yield from (str(v) for v in value if v)
            elif value:
                yield str(value)


def train_text_tokenizer(
    texts: Iterable[str] | Any,
    vocab_size: int = 4096,
    *,
    min_frequency: int = 2,
    lowercase: bool = False,
    model_max_length: int = 4096,
    save_directory: str | os.PathLike | None = None,
    show_progress: bool = False,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts` and wrap it as a `PreTrainedTokenizerFast`.

    Args:
        texts: an iterable of strings, or a canonical `datasets.Dataset` (its text columns are used).
        vocab_size: target size including the 17 special/tag tokens and the 256 byte symbols.
        min_frequency: a merge must occur at least this often.
        lowercase: lower-case the text before tokenisation (decoding then returns lower-case text).
        model_max_length: recorded on the tokenizer.
        save_directory: if given, the tokenizer is saved there (`tokenizer.json`, `tokenizer_config.json`,
            `chat_template.jinja`).

    Returns:
        A `PreTrainedTokenizerFast` with pad/bos/eos/unk/mask set, `SPECIAL_TOKENS + TEXT_TAG_TOKENS` at ids
        0..16, no automatic BOS/EOS (the processor places them) and a chat template.
    """
    reserved = list(SPECIAL_TOKENS + TEXT_TAG_TOKENS)
    if vocab_size < len(reserved) + 256:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: byte-level BPE needs {len(reserved)} special tokens + 256 "
            f"byte symbols, so at least {len(reserved) + 256}."
        )
    if hasattr(texts, "column_names"):
        texts = texts_from_dataset(texts)

    tokenizer = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    steps = [normalizers.NFKC()]
    if lowercase:
        steps.append(normalizers.Lowercase())
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.Punctuation(behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in reserved],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    tokenizer.train_from_iterator((str(t) for t in texts if t), trainer=trainer)
    # The reasoning/grounding tags stay single tokens but are ordinary text for decoding.
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in TEXT_TAG_TOKENS])

    for token, expected in DEFAULT_TOKEN_IDS.items():
        if tokenizer.token_to_id(token) != expected:
            raise RuntimeError(f"Token {token} got id {tokenizer.token_to_id(token)}, expected {expected}.")

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        mask_token=MASK_TOKEN,
        additional_special_tokens=[
            t for t in SPECIAL_TOKENS if t not in (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN, MASK_TOKEN)
        ],
        model_max_length=model_max_length,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    if save_directory is not None:
        fast.save_pretrained(save_directory)
    return fast
