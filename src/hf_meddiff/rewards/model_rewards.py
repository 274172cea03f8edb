"""Model-based rewards that hold a MedDiff pipeline: cycle consistency and multimodal inpainting.

Both are callable classes in TRL's reward convention (`reward(prompts=..., completions=..., completion_ids=...,
**columns)`), with a `__name__` for logging. They accept text completions (a report the policy wrote for the row's
`image`) and image completions (an image the policy drew for the row's `report`), given as

- `completion_ids` (what TRL's `GRPOTrainer` passes; the completion string is then empty, since the processor's
  `batch_decode` drops image tokens): g*g image vocabulary ids (VQ code + `image_token_offset`, other tokens such as
  `<|eos|>` ignored), or exactly g*g raw VQ codes when the completion holds no text (for a text completion raw codes
  could not be told from text ids). These codes go to the model as they are: decoding them to pixels and
  re-encoding would change most of them.
- the completion itself: a PIL image, VQ codes / vocabulary ids `[g*g]`, or a conversational message whose content
  holds `{"type": "image", "image": ...}`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import PIL.Image
import torch

from ..answers import extract_answer
from ._utils import completion_text
from .report_rewards import report_reward

__all__ = ["CycleConsistencyReward", "InpaintingReward"]


class _PipelineReward:
    """Shared plumbing: the pipeline, seeded randomness, and reading images / texts from completions and columns."""

    __name__ = "model_reward"

    def __init__(
        self, pipeline: Any = None, model: Any = None, processor: Any = None, seed: int = 0, **call_kwargs
    ):
        if pipeline is None:
            if model is None or processor is None:
                raise ValueError("Pass `pipeline=MedDiffPipeline(...)` or both `model=` and `processor=`.")
            from ..generation import MedDiffPipeline

            pipeline = MedDiffPipeline(model=model, processor=processor)
            pipeline.set_progress_bar_config(disable=True)
        self.pipeline = pipeline
        self.seed = seed
        self.call_kwargs = dict(call_kwargs)
        self._generator = torch.Generator().manual_seed(seed)

    @property
    def processor(self) -> Any:
        return self.pipeline.processor

    @property
    def config(self) -> Any:
        return self.pipeline.model.config

    @property
    def num_image_tokens(self) -> int:
        return int(self.config.image_grid_size) ** 2

    def _next_generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(
            int(torch.randint(0, 2**31 - 1, (1,), generator=self._generator))
        )

    # -- reading inputs --------------------------------------------------------------------------------------

    def _codes(self, value: Any, raw_codes: bool = True) -> torch.LongTensor | None:
        """VQ codes [g*g] from a PIL image / array image / vocabulary ids / raw codes; None when it is none of these.

        Ids are read as vocabulary ids first: the values in `[offset, offset + codebook)` minus the offset, when there
        are exactly g*g of them. Otherwise, with `raw_codes=True`, exactly g*g values in `[0, codebook)` are raw codes.
        """
        if value is None:
            return None
        if isinstance(value, (list, tuple)) and value and not isinstance(value[0], (int, np.integer)):
            return self._codes(value[0], raw_codes)  # a list of images: the first one
        if isinstance(value, Mapping):
            return self._codes(value.get("image", value.get("images")), raw_codes)
        try:
            if isinstance(value, PIL.Image.Image) or (
                isinstance(value, np.ndarray) and value.dtype != np.int64
            ):
                return self.processor.encode_images([value])[0].cpu().long()
            ids = torch.as_tensor(value).long().flatten()
        except Exception:  # noqa: BLE001 - anything unreadable is "no image"
            return None
        if ids.numel() == 0:
            return None
        codebook, offset = int(self.config.image_codebook_size), int(self.config.image_token_offset)
        image_part = ids[(ids >= offset) & (ids < offset + codebook)] - offset
        if len(image_part) == self.num_image_tokens:
            return image_part
        if (
            raw_codes
            and len(ids) == self.num_image_tokens
            and int(ids.min()) >= 0
            and int(ids.max()) < codebook
        ):
            return ids
        return None

    def _completion_codes(self, completion: Any, completion_ids: Any) -> torch.LongTensor | None:
        """VQ codes [g*g] of an image completion; None for a text completion (or an unreadable image).

        A string (or text message) completion is an image when its `completion_ids` hold an image: g*g image
        vocabulary ids, or g*g raw codes when the string is empty (TRL's form of an image completion).
        """
        if isinstance(completion, (list, tuple)) and completion and isinstance(completion[0], Mapping):
            for message in completion:
                content = message.get("content")
                if isinstance(content, (list, tuple)):
                    for part in content:
                        if isinstance(part, Mapping) and part.get("type") == "image":
                            return self._codes(part.get("image"))
        if isinstance(completion, str) or (
            isinstance(completion, (list, tuple)) and completion and isinstance(completion[0], Mapping)
        ):
            text = completion_text(completion) or ""
            return self._codes(completion_ids, raw_codes=not text.strip())
        return self._codes(completion) if completion is not None else self._codes(completion_ids)

    @staticmethod
    def _row(column: Sequence | None, i: int) -> Any:
        if column is None or i >= len(column):
            return None
        return column[i]

    def _image_codes_of_row(self, kwargs: dict, i: int) -> torch.LongTensor | None:
        for name in ("image_ids", "image", "images"):
            codes = self._codes(self._row(kwargs.get(name), i))
            if codes is not None:
                return codes
        return None

    def _image_to_text(self, codes: torch.LongTensor, **kwargs: Any) -> Any:
        """`pipeline(image=..., **kwargs)` for images given as VQ codes [B, g*g]: an output with `.text` and
        `.sequences`.

        With a [`MedDiffPipeline`] the codes enter the model as they are (`processor(image_ids=...)` then
        `model.generate`, the pipeline's image -> text steps); any other pipeline callable gets the decoded images.
        """
        from ..generation.pipeline_meddiff import MedDiffPipeline

        offset = int(self.config.image_token_offset)
        if not isinstance(self.pipeline, MedDiffPipeline):
            return self.pipeline(image=self.processor.decode_images(codes + offset), **kwargs)
        model = self.pipeline.model
        batch_size = len(codes)
        question = kwargs.pop("question", None)
        questions = (
            [question] * batch_size if question is None or isinstance(question, str) else list(question)
        )
        options = kwargs.pop("options", None)
        if options is not None and (not options or isinstance(options[0], str)):
            options = [options] * batch_size
        response_ids = kwargs.pop("response_ids", None)
        response_keep_mask = kwargs.pop("response_keep_mask", None)
        generator = kwargs.pop("generator", None)
        config = self.pipeline._generation_config(kwargs.pop("generation_config", None))
        if kwargs.get("guidance_scale") is not None:
            kwargs["cfg_scale"] = kwargs.pop("guidance_scale")
        if kwargs.get("num_inference_steps") is not None:
            kwargs["steps"] = kwargs.pop("num_inference_steps")
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        if response_ids is not None:
            kwargs.pop("gen_length", None)
            response_ids = torch.as_tensor(response_ids).long().to(model.device)
            response_keep_mask = torch.as_tensor(response_keep_mask).bool().to(model.device)
        if response_ids is None and kwargs.get("steps") is not None:
            # A step budget that does not split evenly over the semi-autoregressive blocks is rounded up to the
            # next multiple of the number of blocks (every block gets the same number of steps).
            gen_length = int(kwargs.get("gen_length") or config.gen_length)
            block = int(kwargs.get("block_length") or config.block_length or gen_length)
            blocks = max(1, gen_length // max(1, block))
            kwargs["steps"] = -(-int(kwargs["steps"]) // blocks) * blocks
        batch = self.processor(
            image_ids=codes.cpu(),
            text=["" if q is None else q for q in questions],
            task=["report" if q is None else "vqa" for q in questions],
            options=options,
            add_response=False,
            padding_side="left",
        )
        out = model.generate(
            batch["input_ids"].to(model.device),
            batch["attention_mask"].to(model.device),
            generation_config=config,
            response_ids=response_ids,
            response_keep_mask=response_keep_mask,
            generator=generator,
            return_dict_in_generate=True,
            **kwargs,
        )
        return SimpleNamespace(text=self.processor.batch_decode(out.sequences), sequences=out.sequences)

    def _features(self, codes: torch.LongTensor) -> torch.Tensor:
        """Codebook embeddings of codes [B, g*g] -> [B, g*g, D]."""
        latents = self.processor.image_tokenizer.ids_to_latents(codes)
        return latents.flatten(2).transpose(1, 2).float().cpu()


class CycleConsistencyReward(_PipelineReward):
    r"""
    Cycle-consistency reward computed with the MedDiff model itself.

    - `direction="image_report_image"` (text completions, report generation): the report the policy wrote is drawn
      back into an image by the model (`pipe(prompt=report)`), and compared with the row's original image (the
      `image` or `image_ids` column): `token_weight * token agreement + feature_weight * feature similarity`, where
      token agreement is the fraction of equal VQ codes and feature similarity the mean over positions of
      `max(cos, 0)` between the codebook embeddings of the two images.
    - `direction="report_image_report"` (image completions, report -> image): the image the policy drew is described
      by the model (`pipe(image=...)`), and the description is scored against the row's `report` with
      `report_reward` (`text_metric`, default ROUGE-L + clinical-finding F1).

    Rows without the needed original (no image / no report) get `None`; unreadable or empty completions 0.0.

    Args:
        pipeline ([`MedDiffPipeline`], *optional*): or give `model=` and `processor=`.
        direction (`str`): `"image_report_image"` or `"report_image_report"`.
        token_weight, feature_weight (`float`): image comparison weights (normalised by their sum).
        text_metric (`str` or `dict`): metric of `report_reward` for `report_image_report`.
        seed (`int`): seeds the generations, so a reward is reproducible.
        **call_kwargs: passed to the pipeline (`num_inference_steps=`, `gen_length=`, ...).

    Example:
    ```python
    >>> from hf_meddiff.rewards import CycleConsistencyReward
    >>> reward = CycleConsistencyReward(pipe, direction="image_report_image")  # doctest: +SKIP
    >>> reward(prompts=prompts, completions=["Findings: a small nodule."], image=[scan])  # doctest: +SKIP
    [0.41]
    ```
    """

    DIRECTIONS = ("image_report_image", "report_image_report")

    def __init__(
        self,
        pipeline: Any = None,
        direction: str = "image_report_image",
        token_weight: float = 0.5,
        feature_weight: float = 0.5,
        text_metric: str | Mapping[str, float] | None = None,
        model: Any = None,
        processor: Any = None,
        seed: int = 0,
        **call_kwargs: Any,
    ):
        if direction not in self.DIRECTIONS:
            raise ValueError(f"Unknown direction {direction!r}; use one of {self.DIRECTIONS}.")
        if token_weight < 0 or feature_weight < 0 or token_weight + feature_weight <= 0:
            raise ValueError(
                f"Weights must be >= 0 with a positive sum, got {token_weight}, {feature_weight}."
            )
        super().__init__(pipeline, model, processor, seed, **call_kwargs)
        self.direction = direction
        self.token_weight, self.feature_weight = token_weight, feature_weight
        self.text_metric = text_metric or {"rouge_l": 0.5, "clinical_f1": 0.5}
        self.__name__ = f"cycle_{direction}_reward"

    def image_similarity(self, generated: torch.LongTensor, original: torch.LongTensor) -> list[float]:
        """`token_weight * agreement + feature_weight * similarity` of code grids [B, g*g] (normalised weights)."""
        agreement = (generated == original).float().mean(dim=1)
        cosine = torch.nn.functional.cosine_similarity(
            self._features(generated), self._features(original), dim=-1
        )
        similarity = cosine.clamp(min=0).mean(dim=1)
        total = self.token_weight + self.feature_weight
        return ((self.token_weight * agreement + self.feature_weight * similarity) / total).tolist()

    @torch.no_grad()
    def __call__(self, completions: list[Any], **kwargs: Any) -> list[float | None]:
        n = len(completions)
        rewards: list[float | None] = [None] * n
        completion_ids = kwargs.get("completion_ids")
        if self.direction == "image_report_image":
            todo, reports, originals = [], [], []
            for i, completion in enumerate(completions):
                original = self._image_codes_of_row(kwargs, i)
                if original is None:
                    continue
                text = completion_text(completion)
                report = extract_answer(text).strip() if text is not None else ""
                if not report:
                    rewards[i] = 0.0
                    continue
                todo.append(i)
                reports.append(report)
                originals.append(original)
            if todo:
                generated = self.pipeline(
                    prompt=reports, output_type="codes", generator=self._next_generator(), **self.call_kwargs
                ).images
                scores = self.image_similarity(generated.cpu().long(), torch.stack(originals))
                for i, score in zip(todo, scores):
                    rewards[i] = float(score)
            return rewards

        references = kwargs.get("report")
        todo, images, refs = [], [], []
        for i, completion in enumerate(completions):
            reference = self._row(references, i)
            if not isinstance(reference, str) or not reference.strip():
                continue
            codes = self._completion_codes(completion, self._row(completion_ids, i))
            if codes is None:
                rewards[i] = 0.0
                continue
            todo.append(i)
            images.append(codes)
            refs.append(reference)
        if todo:
            described = self._image_to_text(
                torch.stack(images), generator=self._next_generator(), **self.call_kwargs
            ).text
            scores = report_reward(described, report=refs, metric=self.text_metric)
            for i, score in zip(todo, scores):
                rewards[i] = 0.0 if score is None else float(score)
        return rewards


class InpaintingReward(_PipelineReward):
    r"""
    Multimodal inpainting reward: how well the model reconstructs masked tokens of an (image, text) pair from the
    other modality.

    The pair of a row is (the completion's image, or the row's `image`/`image_ids`) and (the completion's text, or
    the row's `report`), so the reward fits both report generation (text completions) and report -> image (image
    completions). A random `mask_ratio` fraction (drawn uniformly in [0.15, 0.30] per row, at least one token) of the
    `modality` tokens is masked:

    - `modality="image"`: the model inpaints the masked image tokens conditioned on the text
      (`pipe(prompt=text, image_ids=..., image_keep_mask=...)`); the reward is
      `token_weight * accuracy + feature_weight * feature similarity` over the masked positions;
    - `modality="text"`: the model infills the masked text tokens conditioned on the image (and the row's
      `question`, when there is one: VQA; otherwise the report layout) with
      `pipe(image=..., question=..., response_ids=..., response_keep_mask=...)`; the reward is the accuracy over
      the masked positions. Texts are truncated to `max_text_tokens`.

    Rows lacking one side of the pair get `None`; unreadable or empty completions 0.0.

    Example:
    ```python
    >>> from hf_meddiff.rewards import InpaintingReward
    >>> reward = InpaintingReward(pipe, modality="image")  # doctest: +SKIP
    >>> reward(prompts=prompts, completions=["Findings: a small nodule."], image=[scan])  # doctest: +SKIP
    [0.62]
    ```
    """

    MODALITIES = ("image", "text")

    def __init__(
        self,
        pipeline: Any = None,
        modality: str = "image",
        mask_ratio: tuple[float, float] = (0.15, 0.30),
        token_weight: float = 0.5,
        feature_weight: float = 0.5,
        max_text_tokens: int = 128,
        model: Any = None,
        processor: Any = None,
        seed: int = 0,
        **call_kwargs: Any,
    ):
        if modality not in self.MODALITIES:
            raise ValueError(f"Unknown modality {modality!r}; use one of {self.MODALITIES}.")
        low, high = mask_ratio
        if not 0 < low <= high <= 1:
            raise ValueError(f"mask_ratio must be (low, high) with 0 < low <= high <= 1, got {mask_ratio}.")
        if token_weight < 0 or feature_weight < 0 or token_weight + feature_weight <= 0:
            raise ValueError(
                f"Weights must be >= 0 with a positive sum, got {token_weight}, {feature_weight}."
            )
        super().__init__(pipeline, model, processor, seed, **call_kwargs)
        self.modality = modality
        self.mask_ratio = (float(low), float(high))
        self.token_weight, self.feature_weight = token_weight, feature_weight
        self.max_text_tokens = max_text_tokens
        self.__name__ = f"inpainting_{modality}_reward"

    def random_mask(self, length: int) -> torch.BoolTensor:
        """A `[length]` mask with True on a random `U(low, high)` fraction of positions (at least one)."""
        low, high = self.mask_ratio
        ratio = low + (high - low) * float(torch.rand((), generator=self._generator))
        count = min(length, max(1, round(ratio * length)))
        mask = torch.zeros(length, dtype=torch.bool)
        mask[torch.randperm(length, generator=self._generator)[:count]] = True
        return mask

    def _pair(self, completion: Any, kwargs: dict, i: int) -> tuple[Any, Any, bool]:
        """(image codes or None, text or None, completion_usable).

        An image completion (see `_completion_codes`, `completion_ids` included) pairs with the row's `report`; a
        text completion with the row's `image` / `image_ids`.
        """
        codes = self._completion_codes(completion, self._row(kwargs.get("completion_ids"), i))
        text = completion_text(completion) if codes is None else None
        if text is not None:
            report = extract_answer(text).strip()
            return self._image_codes_of_row(kwargs, i), report, bool(report)
        reference = self._row(kwargs.get("report"), i)
        reference = reference if isinstance(reference, str) and reference.strip() else None
        return codes, reference, codes is not None

    @torch.no_grad()
    def __call__(self, completions: list[Any], **kwargs: Any) -> list[float | None]:
        n = len(completions)
        rewards: list[float | None] = [None] * n
        todo, codes_list, texts, questions = [], [], [], []
        for i, completion in enumerate(completions):
            codes, text, usable = self._pair(completion, kwargs, i)
            if codes is None and text is None:
                continue
            if not usable:
                rewards[i] = 0.0
                continue
            if codes is None or text is None:
                continue
            todo.append(i)
            codes_list.append(codes)
            texts.append(text)
            question = self._row(kwargs.get("question"), i)
            questions.append(question if isinstance(question, str) and question.strip() else None)
        if not todo:
            return rewards
        if self.modality == "image":
            scores = self._inpaint_image(codes_list, texts)
        else:
            scores = self._infill_text(codes_list, texts, questions)
        for i, score in zip(todo, scores):
            rewards[i] = float(score)
        return rewards

    def _inpaint_image(self, codes_list: list[torch.Tensor], texts: list[str]) -> list[float]:
        original = torch.stack(codes_list)
        masked = torch.stack([self.random_mask(original.shape[1]) for _ in codes_list])
        out = (
            self.pipeline(
                prompt=texts,
                image_ids=original,
                image_keep_mask=~masked,
                output_type="codes",
                generator=self._next_generator(),
                **self.call_kwargs,
            )
            .images.cpu()
            .long()
        )
        correct = (out == original) & masked
        accuracy = correct.sum(1).float() / masked.sum(1).float()
        cosine = torch.nn.functional.cosine_similarity(self._features(out), self._features(original), dim=-1)
        similarity = (cosine.clamp(min=0) * masked).sum(1) / masked.sum(1).float()
        total = self.token_weight + self.feature_weight
        return ((self.token_weight * accuracy + self.feature_weight * similarity) / total).tolist()

    def _infill_text(
        self, codes_list: list[torch.Tensor], texts: list[str], questions: list[str | None]
    ) -> list[float]:
        tokenizer = self.processor.tokenizer
        eos = int(
            self.config.eos_token_id
            if getattr(self.config, "eos_token_id", None) is not None
            else tokenizer.eos_token_id
        )
        rows = [
            tokenizer(text, add_special_tokens=False)["input_ids"][: self.max_text_tokens] for text in texts
        ]
        length = max(len(r) for r in rows) + 1
        response = torch.full((len(rows), length), eos, dtype=torch.long)
        masked = torch.zeros((len(rows), length), dtype=torch.bool)
        for b, ids in enumerate(rows):
            if ids:
                response[b, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                masked[b, : len(ids)] = self.random_mask(len(ids))
        valid = masked.any(dim=1)
        steps = int(masked.sum(1).max().clamp(min=1))
        overrides = {"block_length": length, "steps": steps, **self.call_kwargs}
        out = (
            self._image_to_text(
                torch.stack(codes_list),
                question=questions,
                response_ids=response,
                response_keep_mask=~masked,
                generator=self._next_generator(),
                **overrides,
            )
            .sequences.cpu()
            .long()
        )
        accuracy = ((out == response) & masked).sum(1).float() / masked.sum(1).clamp(min=1).float()
        return [float(a) if v else 0.0 for a, v in zip(accuracy.tolist(), valid.tolist())]
