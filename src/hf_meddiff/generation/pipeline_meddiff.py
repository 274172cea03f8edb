# Copyright 2026 The hf-meddiff Authors. Licensed under the Apache License, Version 2.0.
"""`MedDiffPipeline`: the diffusers-style entry to MedDiff generation.

- report -> image: `pipe(prompt=report).images`
- image (+ question) -> text: `pipe(image=img, question=q).text` (no question: a report)
- image inpainting: `pipe(prompt=report, image_ids=codes, image_keep_mask=keep)`
- text infilling: `pipe(image=img, question=q, response_ids=ids, response_keep_mask=keep)`

Why no diffusers scheduler object: the denoising loops live in the model's `generation_meddiff.py`, because a saved
model folder must generate with `trust_remote_code` and without hf_meddiff or diffusers (RL rollouts call
`model.generate` / `model.generate_images` directly), and one implementation is better than two. The loops follow
the two diffusers schedulers that fit in spirit: the image loop is `AmusedScheduler`'s MaskGIT step (cosine mask
schedule, Gumbel-randomised confidence with an annealed temperature, known tokens never re-masked), and the text
loop is `BlockRefinementScheduler`'s commit-by-confidence (even per-step transfer counts, threshold commits). Neither
scheduler could be used as is: `AmusedScheduler` samples over its whole logit tensor and has no notion of a token
range, guidance or per-row inpainting ratios in the step's mask count, and `BlockRefinementScheduler` has no
margin/entropy/random remasking, no per-row trajectories and no KV-cache protocol (the pipeline owns the forward).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import PIL.Image
import torch
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.utils import BaseOutput

from ..models.meddiff.generation_meddiff import MedDiffGenerationConfig

TEXT_CALLBACK_INPUTS = ["canvas", "committed", "tokens", "trajectory"]
IMAGE_CALLBACK_INPUTS = ["canvas", "image_ids", "committed", "trajectory"]


@dataclass
class MedDiffPipelineOutput(BaseOutput):
    """
    Output of [`MedDiffPipeline`].

    Args:
        images (`list[PIL.Image.Image]` or `torch.Tensor`, *optional*): generated images (report -> image), as
            PIL images (`output_type="pil"`) or the VQ codes `[B, g*g]` (`output_type="codes"`).
        text (`list[str]`, *optional*): generated answers / reports (image -> text).
        sequences (`torch.LongTensor`): the generated token ids: `[B, gen_length]` text (pad after EOS) or
            `[B, g*g]` image vocabulary ids (VQ code + `image_token_offset`).
        trajectory (`torch.LongTensor`, *optional*): with `return_trajectory=True`, the denoising step at which each
            token of `sequences` was committed (-1 for tokens given as fixed).
        num_forward_passes (`int`, *optional*): model forward calls the generation took.
    """

    images: list[PIL.Image.Image] | torch.Tensor | None = None
    text: list[str] | None = None
    sequences: torch.LongTensor | None = None
    trajectory: torch.LongTensor | None = None
    num_forward_passes: int | None = None


class MedDiffPipeline(DiffusionPipeline):
    r"""
    Report-to-image and image-to-text generation with a MedDiff model, diffusers style.

    Args:
        model ([`MedDiffForMaskedDiffusion`]): the masked-diffusion model (its `generation_config` gives the
            default sampler settings).
        processor ([`MedDiffProcessor`]): builds the task sequences; its `image_tokenizer` decodes image tokens.

    Example:

    ```python
    >>> from hf_meddiff import MedDiffPipeline
    >>> pipe = MedDiffPipeline.from_pretrained("outputs/demo/model")  # doctest: +SKIP
    >>> image = pipe(prompt="Findings: CT of the head. A small nodule in the upper left.").images[0]  # doctest: +SKIP
    >>> pipe(image=image, question="Which modality?", options=["CT", "MRI", "X-ray"]).text[0]  # doctest: +SKIP

    ```
    """

    model_cpu_offload_seq = "model"
    _optional_components: list[str] = []

    def __init__(self, model: Any, processor: Any):
        super().__init__()
        self.register_modules(model=model, processor=processor)

    # -- loading ---------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any
    ) -> MedDiffPipeline:
        """Load from a folder saved by `model.save_pretrained` + `processor.save_pretrained` (or a pipeline folder
        with `model_index.json`, as written by `pipe.save_pretrained`).

        Keyword arguments `model=` / `processor=` replace a component; `dtype`/`device_map` and other
        model-loading options go to the model's `from_pretrained`.
        """
        path = str(pretrained_model_name_or_path)
        if os.path.isfile(os.path.join(path, "model_index.json")):
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        from ..models.meddiff.modeling_meddiff import MedDiffForMaskedDiffusion
        from ..models.meddiff.processing_meddiff import MedDiffProcessor

        model = kwargs.pop("model", None)
        processor = kwargs.pop("processor", None)
        if processor is None:
            processor = MedDiffProcessor.from_pretrained(pretrained_model_name_or_path)
        if model is None:
            model = MedDiffForMaskedDiffusion.from_pretrained(pretrained_model_name_or_path, **kwargs)
        return cls(model=model.eval(), processor=processor)

    # -- inputs ----------------------------------------------------------------------------------------------

    def check_inputs(
        self,
        prompt: Any,
        image: Any,
        image_ids: Any,
        image_keep_mask: Any,
        response_ids: Any,
        response_keep_mask: Any,
        callback_on_step_end_tensor_inputs: list[str] | None,
        allowed_inputs: list[str],
    ) -> None:
        if prompt is not None and (response_ids is not None or response_keep_mask is not None):
            raise ValueError(
                "response_ids/response_keep_mask are for image -> text infilling; drop `prompt`."
            )
        if prompt is None and image is None:
            raise ValueError(
                "Give `prompt` (a report, to draw an image) or `image` (to answer / write a report)."
            )
        if prompt is None and (image_ids is not None or image_keep_mask is not None):
            raise ValueError(
                "image_ids/image_keep_mask inpaint a report -> image generation; give `prompt` too."
            )
        if image_keep_mask is not None and image_ids is None and image is None:
            raise ValueError(
                "image_keep_mask needs the image to inpaint: pass image_ids (VQ codes) or image."
            )
        if (response_ids is None) != (response_keep_mask is None):
            raise ValueError("Text infilling needs both response_ids and response_keep_mask.")
        if callback_on_step_end_tensor_inputs is not None:
            unknown = [k for k in callback_on_step_end_tensor_inputs if k not in allowed_inputs]
            if unknown:
                raise ValueError(
                    f"callback_on_step_end_tensor_inputs {unknown} are not available; choose from {allowed_inputs}."
                )

    def _generation_config(
        self, generation_config: MedDiffGenerationConfig | None
    ) -> MedDiffGenerationConfig:
        config = generation_config if generation_config is not None else self.model.generation_config
        if not isinstance(config, MedDiffGenerationConfig):
            config = MedDiffGenerationConfig.from_model_config(self.model.config)
        return config

    def _step_callback(
        self,
        callback_on_step_end: Callable | None,
        tensor_inputs: list[str],
        progress_bar: Any,
        replaceable: str,
    ) -> Callable[[int, dict[str, Any]], dict[str, Any] | None]:
        def on_step(step: int, state: dict[str, Any]) -> dict[str, Any] | None:
            progress_bar.update()
            if callback_on_step_end is None:
                return None
            callback_kwargs = {name: state[name] for name in tensor_inputs}
            outputs = callback_on_step_end(self, step, step, callback_kwargs) or {}
            return {replaceable: outputs[replaceable]} if replaceable in outputs else None

        return on_step

    # -- call ------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        image: Any = None,
        question: str | list[str] | None = None,
        options: list[list[str] | None] | list[str] | None = None,
        *,
        negative_prompt: str | list[str] | None = None,
        image_ids: torch.LongTensor | None = None,
        image_keep_mask: torch.BoolTensor | None = None,
        response_ids: torch.LongTensor | None = None,
        response_keep_mask: torch.BoolTensor | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        gen_length: int | None = None,
        generation_config: MedDiffGenerationConfig | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_trajectory: bool = False,
        return_dict: bool = True,
        callback_on_step_end: Callable[[Any, int, int, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        **generation_kwargs: Any,
    ) -> MedDiffPipelineOutput | tuple:
        r"""
        Generate an image from a report (`prompt`), or text from an image (`image`, optional `question`).

        Args:
            prompt (`str` or `list[str]`): report(s) to draw (report -> image).
            image (PIL / NumPy / DICOM / NIfTI / list): image(s) to read (image -> text); with `prompt`, the image
                to inpaint (encoded to `image_ids`).
            question (`str` or `list[str]`, *optional*): the question about `image`; none writes a report.
            options (`list[str]` or `list[list[str]]`, *optional*): multiple-choice options per question.
            negative_prompt (`str` or `list[str]`, *optional*): the unconditional prompt of classifier-free
                guidance; defaults to the empty report (`<|bos|> <|t2i|> <|user|> <|assistant|>`).
            image_ids (`torch.LongTensor` `[B, g*g]`, *optional*): VQ codes (no offset, as from
                `processor.encode_images`) of an image to inpaint; positions with `image_keep_mask` True stay.
            image_keep_mask (`torch.BoolTensor` `[B, g*g]`, *optional*).
            response_ids (`torch.LongTensor` `[B, gen_length]`, *optional*): text infilling: vocabulary ids of a
                response (e.g. `tokenizer(text, add_special_tokens=False)` + EOS, EOS-padded); positions with
                `response_keep_mask` True stay, the rest is generated.
            response_keep_mask (`torch.BoolTensor` `[B, gen_length]`, *optional*).
            num_inference_steps (`int`, *optional*): image steps (`image_steps`) for report -> image, or text
                denoising steps (`steps`) for image -> text.
            guidance_scale (`float`, *optional*): classifier-free guidance (`cfg_scale`); 0 disables it.
            gen_length (`int`, *optional*): text tokens to generate.
            generation_config ([`MedDiffGenerationConfig`], *optional*): defaults to the model's; other keyword
                arguments (`threshold=0.9`, `cache_mode="dual"`, `temperature=...`) override its fields.
            generator (`torch.Generator` or a list, one per row, *optional*).
            output_type (`str`): `"pil"` (images as PIL) or `"codes"` (images as VQ codes `[B, g*g]`).
            return_trajectory (`bool`): also return the step at which each token was unmasked.
            return_dict (`bool`): return a [`MedDiffPipelineOutput`] rather than a tuple.
            callback_on_step_end (`Callable`, *optional*): `callback(pipe, step, timestep, callback_kwargs)` after
                every denoising step; `callback_kwargs` holds `callback_on_step_end_tensor_inputs`. Returning
                `{"canvas": ...}` (text) or `{"image_ids": ...}` (image) replaces that tensor.
            callback_on_step_end_tensor_inputs (`list[str]`, *optional*): text: `canvas`, `committed`, `tokens`,
                `trajectory`; image: `canvas`, `image_ids`, `committed`, `trajectory`.

        Returns:
            [`MedDiffPipelineOutput`] (`images` or `text`, `sequences`, optionally `trajectory`), or a tuple
            `(images or text, sequences, trajectory)` when `return_dict=False`.
        """
        # 0. the generation mode and its callback inputs
        if callback_on_step_end is not None and hasattr(callback_on_step_end, "tensor_inputs"):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        text_to_image = prompt is not None
        allowed = IMAGE_CALLBACK_INPUTS if text_to_image else TEXT_CALLBACK_INPUTS
        self.check_inputs(
            prompt,
            image,
            image_ids,
            image_keep_mask,
            response_ids,
            response_keep_mask,
            callback_on_step_end_tensor_inputs,
            allowed,
        )
        tensor_inputs = callback_on_step_end_tensor_inputs or (["image_ids"] if text_to_image else ["canvas"])
        if output_type not in ("pil", "codes"):
            raise ValueError(f"output_type must be 'pil' or 'codes', got {output_type!r}.")
        config = self._generation_config(generation_config)
        overrides = dict(generation_kwargs)
        if guidance_scale is not None:
            overrides["cfg_scale"] = guidance_scale
        if gen_length is not None:
            overrides["gen_length"] = gen_length
        if num_inference_steps is not None:
            overrides["image_steps" if text_to_image else "steps"] = num_inference_steps
        device = self._execution_device
        if text_to_image:
            return self._text_to_image(
                prompt, image, negative_prompt, image_ids, image_keep_mask, config, overrides, generator, device,
                output_type, return_trajectory, return_dict, callback_on_step_end, tensor_inputs,
            )  # fmt: skip
        return self._image_to_text(
            image, question, options, response_ids, response_keep_mask, config, overrides, generator, device,
            return_trajectory, return_dict, callback_on_step_end, tensor_inputs,
        )  # fmt: skip

    def _text_to_image(
        self, prompt, image, negative_prompt, image_ids, image_keep_mask, config, overrides, generator, device,
        output_type, return_trajectory, return_dict, callback_on_step_end, tensor_inputs,
    ):  # fmt: skip
        processor, model = self.processor, self.model
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        batch_size = len(prompts)
        num_tokens = int(model.config.image_grid_size) ** 2

        # 1. encode the report prompts; the processor appends `<|soi|> [g*g masks] <|eoi|>`, the model's sampler
        #    places its own canvas after `<|soi|>`
        def encode(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
            batch = processor(text=texts, task="t2i", add_response=False, padding_side="left")
            cut = num_tokens + 1
            return batch["input_ids"][:, :-cut].to(device), batch["attention_mask"][:, :-cut].to(device)

        input_ids, attention_mask = encode(prompts)
        negative_ids = negative_mask = None
        if negative_prompt is not None:
            negatives = (
                [negative_prompt] * batch_size if isinstance(negative_prompt, str) else list(negative_prompt)
            )
            negative_ids, negative_mask = encode(negatives)

        # 2. the image to inpaint (VQ codes -> vocabulary ids)
        vocab_image_ids = None
        if image is not None and image_ids is None:
            image_ids = processor.encode_images(image)
        if image_ids is not None:
            image_ids = torch.as_tensor(image_ids).long().to(device)
            if image_ids.ndim == 1:
                image_ids = image_ids[None]
            codebook = int(model.config.image_codebook_size)
            if image_ids.min() < 0 or image_ids.max() >= codebook:
                raise ValueError(
                    f"image_ids must be VQ codes in [0, {codebook}) (as from processor.encode_images), got values "
                    f"in [{int(image_ids.min())}, {int(image_ids.max())}]."
                )
            vocab_image_ids = image_ids + int(model.config.image_token_offset)
            if image_keep_mask is None:
                image_keep_mask = torch.ones_like(image_ids, dtype=torch.bool)

        # 3. denoise (MaskGIT + classifier-free guidance)
        steps = overrides.get("image_steps", config.image_steps)
        with self.progress_bar(total=steps) as progress_bar:
            out = model.generate_images(
                input_ids,
                attention_mask,
                generation_config=config,
                negative_input_ids=negative_ids,
                negative_attention_mask=negative_mask,
                image_ids=vocab_image_ids,
                image_keep_mask=image_keep_mask,
                generator=generator,
                callback=self._step_callback(callback_on_step_end, tensor_inputs, progress_bar, "image_ids"),
                return_dict_in_generate=True,
                **overrides,
            )

        # 4. decode the tokens to images
        if output_type == "codes":
            images = out.sequences - int(model.config.image_token_offset)
        else:
            images = processor.decode_images(out.sequences)
        self.maybe_free_model_hooks()
        trajectory = out.trajectory if return_trajectory else None
        if not return_dict:
            return images, out.sequences, trajectory
        return MedDiffPipelineOutput(
            images=images,
            sequences=out.sequences,
            trajectory=trajectory,
            num_forward_passes=out.num_forward_passes,
        )

    def _image_to_text(
        self, image, question, options, response_ids, response_keep_mask, config, overrides, generator, device,
        return_trajectory, return_dict, callback_on_step_end, tensor_inputs,
    ):  # fmt: skip
        processor, model = self.processor, self.model
        images = list(image) if isinstance(image, (list, tuple)) else [image]
        batch_size = len(images)
        questions = (
            [question] * batch_size if question is None or isinstance(question, str) else list(question)
        )
        if options is not None and (not options or isinstance(options[0], str)):
            options = [options] * batch_size

        # 1. encode the image and the question (no question: report writing)
        tasks = ["report" if q is None else "vqa" for q in questions]
        texts = ["" if q is None else q for q in questions]
        batch = processor(
            images=images, text=texts, task=tasks, options=options, add_response=False, padding_side="left"
        )
        input_ids = batch["input_ids"].to(device)
        attention_mask = batch["attention_mask"].to(device)
        if response_ids is not None:
            response_ids = torch.as_tensor(response_ids).long().to(device)
            response_keep_mask = torch.as_tensor(response_keep_mask).bool().to(device)
            overrides.pop("gen_length", None)

        # 2. denoise (block-wise, with the fast path when the config asks for it)
        if response_ids is not None:
            steps = int(response_ids.shape[1])
        else:
            steps = model._prepare_generation_config(config, **overrides).total_steps
        with self.progress_bar(total=steps) as progress_bar:
            out = model.generate(
                input_ids,
                attention_mask,
                generation_config=config,
                response_ids=response_ids,
                response_keep_mask=response_keep_mask,
                generator=generator,
                callback=self._step_callback(callback_on_step_end, tensor_inputs, progress_bar, "canvas"),
                return_dict_in_generate=True,
                **overrides,
            )

        # 3. decode the text
        text = processor.batch_decode(out.sequences)
        self.maybe_free_model_hooks()
        trajectory = out.trajectory if return_trajectory else None
        if not return_dict:
            return text, out.sequences, trajectory
        return MedDiffPipelineOutput(
            text=text,
            sequences=out.sequences,
            trajectory=trajectory,
            num_forward_passes=out.num_forward_passes,
        )


__all__ = ["MedDiffPipeline", "MedDiffPipelineOutput"]
