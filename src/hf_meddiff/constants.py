"""One table for every name the library shares: special tokens, modalities, question types, styles.

Models, processors, data builders, rewards and metrics all import from here, so a token string or a
modality name is spelled in exactly one place.
"""

from __future__ import annotations

# --- Special tokens of the unified vocabulary (text side). -------------------------------------
# The text tokenizer owns these strings; their ids come from the tokenizer and are recorded in
# MedDiffConfig. Image codes follow the text vocabulary (id = code + image_token_offset) and the
# single [MASK] id comes last.
PAD_TOKEN = "<|pad|>"
BOS_TOKEN = "<|bos|>"
EOS_TOKEN = "<|eos|>"
UNK_TOKEN = "<|unk|>"
MASK_TOKEN = "<|mask|>"
SOI_TOKEN = "<|soi|>"  # start of image
EOI_TOKEN = "<|eoi|>"  # end of image
USER_TOKEN = "<|user|>"
ASSISTANT_TOKEN = "<|assistant|>"

# Task tokens open a sequence and say which layout follows.
TASK_TOKENS: dict[str, str] = {
    "mmu": "<|mmu|>",  # understanding: VQA, diagnosis, report generation, reasoning
    "t2i": "<|t2i|>",  # text-to-image (report-to-image)
}

# Reasoning and grounding tags are plain text, but added as single tokens so they never split.
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
BOX_OPEN, BOX_CLOSE = "<box>", "</box>"
TEXT_TAG_TOKENS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE, BOX_OPEN, BOX_CLOSE)

SPECIAL_TOKENS: tuple[str, ...] = (
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

# --- Boxes: integer xyxy normalised to 0..BOX_SCALE. -------------------------------------------
BOX_SCALE = 999

# --- Reasoning styles. --------------------------------------------------------------------------
REASONING_STYLES = ("think_before", "think_after", "no_think")

# --- Data vocabulary. ----------------------------------------------------------------------------
# The eight imaging modalities used for cross-modality evaluation; canonical lower-case names.
MODALITIES = ("ct", "mri", "xray", "ultrasound", "dermoscopy", "fundus", "oct", "microscopy")
MODALITY_NAMES = {
    "ct": "CT",
    "mri": "MRI",
    "xray": "X-ray",
    "ultrasound": "ultrasound",
    "dermoscopy": "dermoscopy",
    "fundus": "fundus photography",
    "oct": "OCT",
    "microscopy": "microscopy",
}
QUESTION_TYPES = ("modality", "anatomy", "diagnosis", "grading", "location", "counting", "open")
TASKS = ("vqa", "report", "t2i", "reasoning")
OPTION_LETTERS = ("A", "B", "C", "D")
