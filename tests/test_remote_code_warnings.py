"""Loading a saved folder (model + processor) with `trust_remote_code=True` where hf_meddiff is absent prints no
"You are using a model of type `meddiff` to instantiate a model of type ``" warning."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from hf_meddiff import MedDiffConfig, MedDiffForMaskedDiffusion
from hf_meddiff.models.meddiff.image_processing_meddiff import MedDiffImageProcessor
from hf_meddiff.models.meddiff.image_tokenizer_meddiff import MedDiffImageTokenizer
from hf_meddiff.models.meddiff.processing_meddiff import MedDiffProcessor
from hf_meddiff.text_tokenizer import train_text_tokenizer

WARNING = "to instantiate a model of type"

# In a Python whose import system refuses hf_meddiff: load each part and record the transformers warnings it logs.
REMOTE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, logging, sys

    class BlockHfMeddiff(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "hf_meddiff" or name.startswith("hf_meddiff."):
                raise ImportError(f"{name} is blocked: the folder must carry its own code")

    sys.meta_path.insert(0, BlockHfMeddiff())
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoProcessor
    from transformers.utils import logging as hf_logging

    records = []

    class Record(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    hf_logging.get_logger("transformers").addHandler(Record())
    warnings = {}
    for name, auto in (("config", AutoConfig), ("model", AutoModel), ("masked_lm", AutoModelForMaskedLM),
                       ("processor", AutoProcessor)):
        del records[:]
        loaded = auto.from_pretrained(sys.argv[1], trust_remote_code=True)
        assert type(loaded).__name__.startswith("MedDiff"), type(loaded)
        warnings[name] = list(records)
    print(json.dumps(warnings))
    """
)


@pytest.fixture(scope="module")
def remote_warnings(tmp_path_factory):
    folder = tmp_path_factory.mktemp("meddiff-folder")
    tokenizer = train_text_tokenizer(["Findings: a small nodule.", "Normal study."] * 8, vocab_size=300)
    processor = MedDiffProcessor(
        MedDiffImageProcessor(size=32),
        tokenizer,
        image_tokenizer=MedDiffImageTokenizer.from_config_preset("tiny"),
    )
    torch.manual_seed(0)
    model = MedDiffForMaskedDiffusion(MedDiffConfig.from_preset("tiny", **processor.model_config_kwargs()))
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(folder.parent / "modules"))
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, str(folder)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("part", ["config", "model", "masked_lm"])
def test_remote_config_and_models_load_without_the_model_type_warning(remote_warnings, part):
    assert not [w for w in remote_warnings[part] if WARNING in w]


def test_remote_processor_loads_without_the_model_type_warning(remote_warnings):
    assert not [w for w in remote_warnings["processor"] if WARNING in w]
