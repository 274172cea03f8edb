"""One table for every name the library shares: special tokens, tasks, modalities, question types, styles.

Models, processors, data builders, rewards and metrics all import from here, so a token string or a
modality name is spelled in exactly one place. This is the bottom layer: it imports only
`models/meddiff/tokens_meddiff.py`, which imports nothing (it travels with saved model folders).
"""

from __future__ import annotations

# --- Special tokens and tasks of the unified vocabulary: defined once, beside the model config, so that saved
# models loading with trust_remote_code carry the same table. See tokens_meddiff for the id layout.
from .models.meddiff.tokens_meddiff import (  # noqa: F401
    ANSWER_CLOSE,
    ANSWER_OPEN,
    ASSISTANT_TOKEN,
    BOS_TOKEN,
    BOX_CLOSE,
    BOX_OPEN,
    DEFAULT_TOKEN_IDS,
    EOI_TOKEN,
    EOS_TOKEN,
    IMAGE_TASKS,
    MASK_TOKEN,
    PAD_TOKEN,
    SOI_TOKEN,
    SPECIAL_TOKENS,
    TASK_TOKENS,
    TASKS,
    TEXT_TAG_TOKENS,
    THINK_CLOSE,
    THINK_OPEN,
    UNK_TOKEN,
    USER_TOKEN,
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
OPTION_LETTERS = ("A", "B", "C", "D")

# Finding labels MedPhantom draws per modality (in ModalitySpec order); the vocabulary of the MedPhantom finding
# labeller (`hf_meddiff.metrics.FindingLabeler.medphantom`), defined here so that metrics need not import data.
MEDPHANTOM_FINDINGS = {
    "ct": ("nodule", "cyst", "abscess"),
    "mri": ("tumor", "cyst", "edema"),
    "xray": ("nodule", "consolidation", "cavity"),
    "ultrasound": ("cyst", "mass", "abscess"),
    "dermoscopy": ("nevus", "melanoma", "angioma"),
    "fundus": ("hemorrhage", "exudate", "cotton wool spot"),
    "oct": ("fluid", "drusen", "detachment"),
    "microscopy": ("tumor cluster", "necrosis", "inflammation"),
}
