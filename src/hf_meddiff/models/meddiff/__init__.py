"""MedDiff: a discrete-diffusion multimodal model in transformers' house style.

Importing this package registers MedDiff with `AutoConfig`, `AutoModel`, `AutoModelForMaskedLM`,
`AutoProcessor` and `AutoImageProcessor`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

from .configuration_meddiff import MEDDIFF_PRESETS, MEDDIFF_TASKS, MedDiffConfig
from .modeling_meddiff import (
    MedDiffCache,
    MedDiffForMaskedDiffusion,
    MedDiffMaskedDiffusionOutput,
    MedDiffModel,
    MedDiffPreTrainedModel,
)

# --- Model: Auto classes in this Python, and `auto_map` + module files in every saved folder, so a saved model
# loads with `trust_remote_code=True` where hf_meddiff is not installed.
AutoConfig.register(MedDiffConfig.model_type, MedDiffConfig, exist_ok=True)
AutoModel.register(MedDiffConfig, MedDiffModel, exist_ok=True)
AutoModelForMaskedLM.register(MedDiffConfig, MedDiffForMaskedDiffusion, exist_ok=True)
MedDiffConfig.register_for_auto_class("AutoConfig")
MedDiffModel.register_for_auto_class("AutoModel")
MedDiffForMaskedDiffusion.register_for_auto_class("AutoModelForMaskedLM")

__all__ = [
    "MEDDIFF_PRESETS",
    "MEDDIFF_TASKS",
    "MedDiffCache",
    "MedDiffConfig",
    "MedDiffForMaskedDiffusion",
    "MedDiffMaskedDiffusionOutput",
    "MedDiffModel",
    "MedDiffPreTrainedModel",
]
