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

# --- Processing (image tokenizer, image processor, processor): Auto registration here, `auto_map` + module files in
# saved folders through the classes' own `register_for_auto_class` calls.
from transformers import AutoImageProcessor, AutoProcessor  # noqa: E402

from .image_processing_meddiff import (  # noqa: E402
    WINDOW_PRESETS,
    MedDiffImageProcessor,
    dicom_to_array,
    load_medical_image,
    nifti_to_array,
)
from .image_tokenizer_meddiff import MedDiffImageTokenizer  # noqa: E402
from .processing_meddiff import MedDiffProcessor  # noqa: E402

AutoImageProcessor.register(
    MedDiffConfig, image_processor_classes={"pil": MedDiffImageProcessor}, exist_ok=True
)
AutoProcessor.register(MedDiffConfig, MedDiffProcessor, exist_ok=True)

__all__ += [
    "WINDOW_PRESETS",
    "MedDiffImageProcessor",
    "MedDiffImageTokenizer",
    "MedDiffProcessor",
    "dicom_to_array",
    "load_medical_image",
    "nifti_to_array",
]
