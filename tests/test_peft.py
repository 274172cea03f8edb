"""PEFT on MedDiff: LoRA on the attention/MLP projections, and QLoRA (bitsandbytes NF4) on CPU."""

import pytest
import torch

from hf_meddiff import MedDiffConfig, MedDiffForMaskedDiffusion

peft = pytest.importorskip("peft")
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def training_batch() -> dict[str, torch.Tensor]:
    ids = torch.cat([torch.randint(17, 128, (2, 8)), torch.randint(128, 192, (2, 4))], dim=1)
    labels = torch.full_like(ids, -100)
    labels[:, 5:] = ids[:, 5:]
    return {"input_ids": ids, "labels": labels, "generator": torch.Generator().manual_seed(0)}


def one_step_changes(model: torch.nn.Module) -> set[str]:
    """Runs one AdamW step on the trainable parameters; returns the names of the parameters that changed."""
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = model(**training_batch()).loss
    loss.backward()
    optimizer.step()
    return {name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}


def test_lora_step_changes_only_the_adapters():
    torch.manual_seed(0)
    model = MedDiffForMaskedDiffusion(MedDiffConfig.from_preset("tiny"))
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=PROJECTIONS))
    wrapped = {name.split(".")[-1] for name, module in lora.named_modules() if hasattr(module, "lora_A")}
    assert wrapped == set(PROJECTIONS)

    changed = one_step_changes(lora)
    trainable = {name for name, p in lora.named_parameters() if p.requires_grad}
    assert changed and changed <= trainable
    assert all(".lora_A." in name or ".lora_B." in name for name in trainable)
    assert {name.split(".")[-4] for name in changed} == set(PROJECTIONS)  # every projection type learned


def test_merged_lora_model_is_a_plain_meddiff_model_with_the_same_outputs():
    torch.manual_seed(0)
    model = MedDiffForMaskedDiffusion(MedDiffConfig.from_preset("tiny"))
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=PROJECTIONS))
    one_step_changes(lora)
    ids = torch.randint(17, 192, (1, 9))
    lora.eval()
    with torch.no_grad():
        adapted = lora(input_ids=ids).logits
        merged = lora.merge_and_unload()
        assert type(merged) is MedDiffForMaskedDiffusion
        torch.testing.assert_close(merged(ids).logits, adapted, rtol=1e-4, atol=1e-5)


def test_qlora_nf4_on_cpu_trains_only_the_adapters(tmp_path):
    bnb = pytest.importorskip("bitsandbytes")
    from transformers import BitsAndBytesConfig

    torch.manual_seed(0)
    MedDiffForMaskedDiffusion(MedDiffConfig.from_preset("tiny")).save_pretrained(tmp_path)
    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
    )
    model = MedDiffForMaskedDiffusion.from_pretrained(
        tmp_path, quantization_config=quantization, device_map="cpu"
    )
    quantized = {name.split(".")[-1] for name, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    assert quantized == set(PROJECTIONS)

    model = peft.prepare_model_for_kbit_training(
        model, gradient_checkpointing_kwargs={"use_reentrant": False}
    )
    model = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=PROJECTIONS))
    model.train()
    changed = one_step_changes(model)
    assert changed
    assert all(".lora_A." in name or ".lora_B." in name for name in changed)
