"""Importing the light entry points loads neither diffusers nor the model code; MedDiff still registers with the
transformers Auto classes, whichever of the two is imported first. Each check runs in a fresh Python."""

import json
import subprocess
import sys

import pytest

HEAVY = (
    "diffusers",
    "hf_meddiff.models.meddiff.modeling_meddiff",
    "hf_meddiff.models.meddiff.generation_meddiff",
    "hf_meddiff.models.meddiff.image_tokenizer_meddiff",
    "hf_meddiff.image_tokenizer",
)


def run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def loaded_after(statement: str, names=HEAVY) -> list[str]:
    code = (
        f"import json, sys\n{statement}\nprint(json.dumps([m for m in {list(names)!r} if m in sys.modules]))"
    )
    return run(code)


@pytest.mark.parametrize(
    "module",
    [
        "hf_meddiff",
        "hf_meddiff.rewards",
        "hf_meddiff.metrics",
        "hf_meddiff.data.schema",
        "hf_meddiff.constants",
        "hf_meddiff.formatting",
    ],
)
def test_light_entry_points_load_no_diffusers_and_no_model_code(module):
    assert loaded_after(f"import {module}") == []


def test_rewards_load_neither_torch_nor_transformers():
    assert loaded_after("import hf_meddiff.rewards", ("torch", "transformers")) == []


def test_model_based_rewards_load_on_attribute_access():
    loaded = loaded_after(
        "import hf_meddiff.rewards as r\nassert r.InpaintingReward.__name__ == 'InpaintingReward'",
        ("hf_meddiff.rewards.model_rewards",),
    )
    assert loaded == ["hf_meddiff.rewards.model_rewards"]


AUTO_CHECK = """
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForMaskedLM, AutoProcessor
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING
config = AutoConfig.for_model("meddiff", **{"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
    "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 32})
before = sorted(m for m in sys.modules if m.startswith("hf_meddiff.models.meddiff.") and "modeling" in m)
model = AutoModelForMaskedLM.from_config(config)
base = AutoModel.from_config(config)
processor_class = PROCESSOR_MAPPING[type(config)]
print(json.dumps({"config": type(config).__name__, "model": type(model).__name__, "base": type(base).__name__,
    "processor": processor_class.__name__, "modeling_loaded_before_use": before}))
"""


@pytest.mark.parametrize("first", ["hf_meddiff", "transformers"])
def test_auto_classes_resolve_meddiff_after_import_hf_meddiff(first):
    order = (
        "import hf_meddiff"
        if first == "hf_meddiff"
        else "from transformers import AutoModel\nimport hf_meddiff"
    )
    out = run(f"import json, sys\n{order}\n{AUTO_CHECK}")
    assert out["config"] == "MedDiffConfig"
    assert (out["model"], out["base"]) == ("MedDiffForMaskedDiffusion", "MedDiffModel")
    assert out["processor"] == "MedDiffProcessor"
    assert out["modeling_loaded_before_use"] == [], "the model code loads on first use"


def test_direct_import_of_the_model_module_still_saves_auto_map():
    out = run(
        "import json\nfrom hf_meddiff.models.meddiff.modeling_meddiff import MedDiffForMaskedDiffusion, MedDiffModel\n"
        "from hf_meddiff.models.meddiff.configuration_meddiff import MedDiffConfig\n"
        "print(json.dumps([MedDiffModel._auto_class, MedDiffForMaskedDiffusion._auto_class, "
        "MedDiffConfig._auto_class]))"
    )
    assert out == ["AutoModel", "AutoModelForMaskedLM", "AutoConfig"]


def test_a_registered_stand_in_pickles_as_the_real_class():
    out = run(
        "import json, pickle\nimport hf_meddiff\nfrom transformers import AutoModel\n"
        "stand_in = AutoModel._model_mapping[hf_meddiff.MedDiffConfig]\n"
        "is_stand_in = type(stand_in).__name__ == '_LazyClass'\n"
        "loaded = pickle.loads(pickle.dumps(stand_in))\n"
        "print(json.dumps([is_stand_in, loaded is hf_meddiff.MedDiffModel]))"
    )
    assert out == [True, True]
