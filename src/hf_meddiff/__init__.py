"""hf-meddiff: Hugging Face-native medical multimodal diffusion models.

Importing the package registers the MedDiff Auto classes (`AutoConfig`, `AutoModel`,
`AutoModelForMaskedLM`, `AutoProcessor`, `AutoImageProcessor`) as transformers imports them (see
`hf_meddiff.models.meddiff`). Everything else loads lazily on first access, so `import hf_meddiff` imports
neither torch, transformers nor diffusers.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"


class _OptionalKernelNoteFilter(logging.Filter):
    """bitsandbytes (imported by diffusers) notes that the optional `kernels` package, which fetches CPU kernels
    from the Hub, is absent. hf-meddiff never wants that download, so the note is noise on every command."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "kernels-community" not in record.getMessage()


logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_OptionalKernelNoteFilter())

from . import models  # noqa: E402,F401  (registers the Auto classes when transformers imports them)

# public name -> submodule that defines it
_LAZY: dict[str, str] = {
    "MedDiffConfig": "models.meddiff",
    "MedDiffModel": "models.meddiff",
    "MedDiffForMaskedDiffusion": "models.meddiff",
    "MedDiffPreTrainedModel": "models.meddiff",
    "MedDiffImageProcessor": "models.meddiff",
    "MedDiffProcessor": "models.meddiff",
    "MedDiffImageTokenizer": "image_tokenizer",
    "train_image_tokenizer": "image_tokenizer",
    "train_text_tokenizer": "text_tokenizer",
    "MedDiffGenerationConfig": "generation",
    "MedDiffPipeline": "generation",
    "MedDiffSFTConfig": "trainer.sft",
    "MedDiffSFTTrainer": "trainer.sft",
    "DiffusionGRPOConfig": "trainer.grpo",
    "DiffusionGRPOTrainer": "trainer.grpo",
    "MedDDPOConfig": "trainer.ddpo",
    "MedDDPOTrainer": "trainer.ddpo",
}

__all__ = [
    "__version__",
    "MedDiffConfig",
    "MedDiffModel",
    "MedDiffForMaskedDiffusion",
    "MedDiffPreTrainedModel",
    "MedDiffImageProcessor",
    "MedDiffProcessor",
    "MedDiffImageTokenizer",
    "train_image_tokenizer",
    "train_text_tokenizer",
    "MedDiffGenerationConfig",
    "MedDiffPipeline",
    "MedDiffSFTConfig",
    "MedDiffSFTTrainer",
    "DiffusionGRPOConfig",
    "DiffusionGRPOTrainer",
    "MedDDPOConfig",
    "MedDDPOTrainer",
]

if TYPE_CHECKING:  # pragma: no cover
    from .generation import MedDiffGenerationConfig, MedDiffPipeline
    from .image_tokenizer import MedDiffImageTokenizer, train_image_tokenizer
    from .models.meddiff import (
        MedDiffConfig,
        MedDiffForMaskedDiffusion,
        MedDiffImageProcessor,
        MedDiffModel,
        MedDiffPreTrainedModel,
        MedDiffProcessor,
    )
    from .text_tokenizer import train_text_tokenizer
    from .trainer import MedDDPOConfig, MedDDPOTrainer, MedDiffSFTConfig, MedDiffSFTTrainer


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hf_meddiff' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
