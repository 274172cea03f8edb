import os
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch

from hf_meddiff.constants import DEFAULT_TOKEN_IDS, SPECIAL_TOKENS, TASKS, TEXT_TAG_TOKENS
from hf_meddiff.formatting import format_reasoning
from hf_meddiff.models.meddiff.image_processing_meddiff import MedDiffImageProcessor
from hf_meddiff.models.meddiff.image_tokenizer_meddiff import MedDiffImageTokenizer
from hf_meddiff.models.meddiff.processing_meddiff import PROCESSOR_TASKS, MedDiffProcessor
from hf_meddiff.text_tokenizer import train_text_tokenizer

CORPUS = [
    "What is the modality of this image? CT MRI X-ray ultrasound",
    "Findings: a round nodule in the right upper lobe <box>[12,345,678,999]</box>. Impression: benign.",
    "<think>Bright round spot <box>[100,200,300,400]</box>.</think><answer>B</answer>",
] * 10

BOS, EOS, PAD, MASK, SOI, EOI, USER, ASSISTANT, MMU, T2I = (
    DEFAULT_TOKEN_IDS[t] for t in ("<|bos|>", "<|eos|>", "<|pad|>", "<|mask|>", "<|soi|>", "<|eoi|>", "<|user|>",
                                   "<|assistant|>", "<|mmu|>", "<|t2i|>")
)  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer():
    return train_text_tokenizer(CORPUS, vocab_size=400)


@pytest.fixture(scope="module")
def processor(tokenizer):
    torch.manual_seed(0)
    vq = MedDiffImageTokenizer.from_config_preset("tiny")
    return MedDiffProcessor(MedDiffImageProcessor(size=32), tokenizer, image_tokenizer=vq, max_length=200)


def text_ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_text_tokenizer_special_ids_and_box_text(tokenizer):
    assert tokenizer.convert_ids_to_tokens(list(range(17))) == list(SPECIAL_TOKENS + TEXT_TAG_TOKENS)
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert (tokenizer.unk_token_id, tokenizer.mask_token_id) == (3, 4)
    tokens = tokenizer.convert_ids_to_tokens(text_ids(tokenizer, "<box>[12,345,678,999]</box>"))
    assert tokens == [
        "<box>",
        "[",
        "1",
        "2",
        ",",
        "3",
        "4",
        "5",
        ",",
        "6",
        "7",
        "8",
        ",",
        "9",
        "9",
        "9",
        "]",
        "</box>",
    ]
    text = "<think>Nodule <box>[1,2,3,4]</box>.</think><answer>C</answer>"
    assert tokenizer.decode([BOS, *text_ids(tokenizer, text), EOS], skip_special_tokens=True) == text
    assert tokenizer.apply_chat_template([{"role": "user", "content": "Q"}], tokenize=False,
                                         add_generation_prompt=True) == "<|bos|><|user|>Q<|assistant|>"  # fmt: skip


def test_text_tokenizer_lowercase_and_save(tmp_path):
    tok = train_text_tokenizer(CORPUS, vocab_size=300, lowercase=True, save_directory=tmp_path)
    assert tok.decode(text_ids(tok, "CT Findings")) == "ct findings"
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert text_ids(loaded, "CT <box>[1,2,3,4]</box>") == text_ids(tok, "CT <box>[1,2,3,4]</box>")
    with pytest.raises(ValueError, match="too small"):
        train_text_tokenizer(CORPUS, vocab_size=100)


def test_tasks_mirror_constants():
    assert PROCESSOR_TASKS == TASKS


def test_vqa_layout_exact(processor, tokenizer):
    codes = torch.arange(16)[None]
    batch = processor(image_ids=codes, text="What is it?", options=[["CT", "MRI"]], responses="B", task="vqa")
    offset = len(tokenizer)
    question = text_ids(tokenizer, "What is it?\nA. CT\nB. MRI")
    prompt = [BOS, MMU, SOI, *range(offset, offset + 16), EOI, USER, *question, ASSISTANT]
    response = [*text_ids(tokenizer, "B"), EOS]
    assert batch["input_ids"][0].tolist() == prompt + response
    assert batch["response_mask"][0].tolist() == [False] * len(prompt) + [True] * len(response)
    assert batch["labels"][0].tolist() == [-100] * len(prompt) + response
    assert batch["attention_mask"].all() and batch["task_ids"].tolist() == [0]


def test_t2i_layout_exact_and_generation_prompt(processor, tokenizer):
    offset = len(tokenizer)
    report = text_ids(tokenizer, "Findings: nodule.")
    batch = processor(image_ids=torch.full((1, 16), 3), text="Findings: nodule.", task="t2i")
    prompt = [BOS, T2I, USER, *report, ASSISTANT, SOI]
    assert batch["input_ids"][0].tolist() == prompt + [offset + 3] * 16 + [EOI]
    assert batch["response_mask"][0].tolist() == [False] * len(prompt) + [True] * 16 + [False]
    assert batch["task_ids"].tolist() == [TASKS.index("t2i")]
    gen = processor(text="Findings: nodule.", task="t2i", add_response=False)
    assert gen["input_ids"][0].tolist() == prompt + [MASK] * 16 + [EOI]
    assert "labels" not in gen


def test_reasoning_and_report_targets(processor, tokenizer):
    target = format_reasoning("B", "Bright spot <box>[1,2,3,4]</box>.")
    batch = processor(image_ids=torch.zeros(2, 16, dtype=torch.long), text=["Q?", None],
                      responses=[target, "Findings: normal."], task=["reasoning", "report"])  # fmt: skip
    assert batch["task_ids"].tolist() == [3, 1]
    first = batch["input_ids"][0][batch["response_mask"][0]].tolist()
    assert first == [*text_ids(tokenizer, target), EOS]
    assert processor.batch_decode(batch["input_ids"]) == [target, "Findings: normal."]


def test_response_length_pads_with_eos_and_checks_length(processor, tokenizer):
    batch = processor(
        image_ids=torch.zeros(1, 16, dtype=torch.long), text="Q", responses="B", response_length=6
    )
    assert batch["input_ids"][0, -6:].tolist() == [*text_ids(tokenizer, "B"), EOS, EOS, EOS, EOS, EOS]
    assert int(batch["response_mask"].sum()) == 6
    with pytest.raises(ValueError, match=r"response is \d+ tokens .* response_length is 2"):
        processor(image_ids=torch.zeros(1, 16, dtype=torch.long), text="Q", responses="Findings: nodule.",
                  response_length=2)  # fmt: skip
    cut = processor(image_ids=torch.zeros(1, 16, dtype=torch.long), text="Q", responses="Findings: nodule.",
                    response_length=3, truncation=True)  # fmt: skip
    assert cut["input_ids"][0, -1].item() == EOS and int(cut["response_mask"].sum()) == 3


def test_batch_padding_right_for_training_left_for_prompts(processor):
    codes = torch.zeros(2, 16, dtype=torch.long)
    train = processor(
        image_ids=codes, text=["Q", "What is the modality of this image?"], responses=["B", "B"]
    )
    short, long = train["attention_mask"].sum(1).tolist()
    assert short < long and train["input_ids"].shape[1] == long
    assert train["attention_mask"][0, :short].all() and not train["attention_mask"][0, short:].any()
    assert (train["input_ids"][0, short:] == PAD).all() and (train["labels"][0, short:] == -100).all()
    prompt = processor(image_ids=codes, text=["Q", "What is the modality of this image?"])
    assert "labels" not in prompt and not prompt["response_mask"].any()
    assert not prompt["attention_mask"][0, : long - short].any() and prompt["attention_mask"][0, -1] == 1
    assert (prompt["input_ids"][:, -1] == ASSISTANT).all()  # prompts end at <|assistant|>


def test_max_length_error_names_length_and_limit(processor):
    with pytest.raises(ValueError, match=r"Sample 0 \(vqa\) is \d+ tokens long, more than the limit of 20"):
        processor(image_ids=torch.zeros(1, 16, dtype=torch.long), text="Q", responses="B", max_length=20)


def test_bad_image_ids_and_missing_inputs(processor):
    with pytest.raises(ValueError, match=r"9 codes but the image tokenizer makes 16"):
        processor(image_ids=torch.zeros(1, 9, dtype=torch.long), text="Q")
    with pytest.raises(ValueError, match="outside the codebook"):
        processor(image_ids=torch.full((1, 16), 500), text="Q")
    with pytest.raises(ValueError, match="needs an image"):
        processor(text="Q", task="vqa")
    with pytest.raises(ValueError, match="Unknown task"):
        processor(image_ids=torch.zeros(1, 16, dtype=torch.long), text="Q", task="segmentation")


def test_cached_image_ids_equal_images(processor):
    images = [np.random.default_rng(i).random((40, 40)) for i in range(2)]
    codes = processor.encode_images(images)
    assert codes.shape == (2, 16)
    from_images = processor(images=images, text=["Q", "Q"], responses=["A", "B"])
    from_ids = processor(image_ids=codes, text=["Q", "Q"], responses=["A", "B"])
    assert torch.equal(from_images["input_ids"], from_ids["input_ids"])


def test_decode_splits_text_and_images(processor, tokenizer):
    offset = len(tokenizer)
    completion = [*text_ids(tokenizer, "<answer>B</answer>"), EOS, *text_ids(tokenizer, "junk")]
    assert processor.decode(completion) == "<answer>B</answer>"
    mixed = processor.batch_decode(torch.tensor([[SOI, *range(offset, offset + 16), EOI, *completion]]),
                                   return_images=True)  # fmt: skip
    assert mixed[0]["text"] == "<answer>B</answer>"
    assert len(mixed[0]["images"]) == 1 and isinstance(mixed[0]["images"][0], PIL.Image.Image)
    assert mixed[0]["images"][0].size == (32, 32)


def test_model_config_kwargs_build_a_config(processor):
    from hf_meddiff import MedDiffConfig

    kwargs = processor.model_config_kwargs()
    assert kwargs["text_vocab_size"] == len(processor.tokenizer) == kwargs["image_token_offset"]
    assert (kwargs["image_codebook_size"], kwargs["image_grid_size"], kwargs["mask_token_id"]) == (
        64,
        4,
        MASK,
    )
    config = MedDiffConfig.from_preset("tiny", **kwargs)
    assert config.vocab_size == len(processor.tokenizer) + 64


def test_dicom_to_tokens_to_pil():
    pydicom = pytest.importorskip("pydicom")
    path = os.path.join(os.path.dirname(pydicom.data.__file__), "test_files", "CT_small.dcm")
    vq = MedDiffImageTokenizer.from_config_preset("embedded")
    image_processor = MedDiffImageProcessor(size=64, window="abdomen")
    codes = vq.encode(image_processor(path)["pixel_values"])
    assert codes.shape == (1, 64)
    image = image_processor.postprocess(vq.decode(codes))[0]
    assert isinstance(image, PIL.Image.Image) and image.size == (64, 64)


def test_save_load_round_trip_with_auto_processor(processor, tmp_path):
    from transformers import AutoProcessor

    processor.save_pretrained(tmp_path)
    assert (tmp_path / "image_tokenizer" / "diffusion_pytorch_model.safetensors").is_file()
    assert (tmp_path / "processing_meddiff.py").is_file()
    assert (tmp_path / "medical_image_meddiff.py").is_file(), "the decoders travel with the image processor"
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, MedDiffProcessor) and loaded.max_length == 200
    images = [np.random.default_rng(0).random((32, 32))]
    a = processor(images=images, text="Q", responses="B")
    b = loaded(images=images, text="Q", responses="B")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_saved_folder_loads_with_remote_code_without_hf_meddiff(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    expected = processor(image_ids=torch.arange(16)[None], text="Q", responses="B")["input_ids"].tolist()
    script = f"""
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "hf_meddiff" or name.startswith("hf_meddiff."):
            raise ImportError("hf_meddiff is blocked")
sys.meta_path.insert(0, _Block())
import torch
from transformers import AutoProcessor
p = AutoProcessor.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)
assert "hf_meddiff" not in type(p).__module__, type(p).__module__
print(p(image_ids=torch.arange(16)[None], text="Q", responses="B")["input_ids"].tolist())
"""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
    }
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == str(expected)
