"""The special-token table of the unified MedDiff vocabulary, the task table and the option layout.

This file is self-contained on purpose (it imports nothing): it is copied next to the config/processor files when
a model is saved with `register_for_auto_class`, so a folder loads with `trust_remote_code=True` in a Python
without `hf_meddiff`. `hf_meddiff.constants` and `hf_meddiff.formatting` re-export what is here; with them it is
the bottom layer of the library.

Text tokenizers built by hf-meddiff place `SPECIAL_TOKENS` then `TEXT_TAG_TOKENS` at ids 0, 1, 2, …
(so `<|pad|>` = 0, `<|bos|>` = 1, `<|eos|>` = 2, `<|unk|>` = 3, `<|mask|>` = 4, …). The image codebook
follows the whole text vocabulary: image token id = code + image_token_offset.
"""

PAD_TOKEN = "<|pad|>"
BOS_TOKEN = "<|bos|>"
EOS_TOKEN = "<|eos|>"
UNK_TOKEN = "<|unk|>"
MASK_TOKEN = "<|mask|>"  # the diffusion [MASK]; a text-side special token, never inside the codebook
SOI_TOKEN = "<|soi|>"  # start of image
EOI_TOKEN = "<|eoi|>"  # end of image
USER_TOKEN = "<|user|>"
ASSISTANT_TOKEN = "<|assistant|>"

# Task tokens open a sequence and say which layout follows.
TASK_TOKENS = {
    "mmu": "<|mmu|>",  # understanding: VQA, diagnosis, report generation, reasoning
    "t2i": "<|t2i|>",  # text-to-image (report-to-image)
}

SPECIAL_TOKENS = (
    PAD_TOKEN,
    BOS_TOKEN,
    EOS_TOKEN,
    UNK_TOKEN,
    MASK_TOKEN,
    SOI_TOKEN,
    EOI_TOKEN,
    USER_TOKEN,
    ASSISTANT_TOKEN,
    *TASK_TOKENS.values(),
)

# Tasks, in the order `task_ids` index them (processor, loss weights, per-task logging, evaluation).
TASKS = ("vqa", "report", "t2i", "reasoning")
IMAGE_TASKS = ("t2i",)  # tasks whose response is an image; the others answer in text

# Reasoning and grounding tags are plain text, added as single tokens so they never split.
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
BOX_OPEN, BOX_CLOSE = "<box>", "</box>"
TEXT_TAG_TOKENS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE, BOX_OPEN, BOX_CLOSE)

# Ids these strings take in tokenizers built by hf-meddiff (position in SPECIAL_TOKENS + TEXT_TAG_TOKENS).
DEFAULT_TOKEN_IDS = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + TEXT_TAG_TOKENS)}

OPTION_LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"  # letters of multiple-choice options, in order


def format_options(question: str, options: list[str] | tuple[str, ...] | None) -> str:
    """`"Q?"`, `["CT", "MRI"]` -> `"Q?\\nA. CT\\nB. MRI"` (no options: the question unchanged)."""
    if not options:
        return question
    if len(options) > len(OPTION_LABELS):
        raise ValueError(f"At most {len(OPTION_LABELS)} options are supported, got {len(options)}.")
    lines = [f"{OPTION_LABELS[i]}. {option}" for i, option in enumerate(options)]
    return "\n".join([question, *lines]) if question else "\n".join(lines)
