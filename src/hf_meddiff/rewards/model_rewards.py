"""Model-based rewards that hold a MedDiff pipeline: cycle consistency and multimodal inpainting.

Both are callable classes in TRL's reward convention (`reward(prompts=..., completions=..., **columns)`), with a
`__name__` for logging. They accept text completions (a report the policy wrote for the row's `image`) and image
completions (an image the policy drew for the row's `report`): a PIL image, VQ codes / vocabulary ids `[g*g]`, a
conversational message whose content holds `{"type": "image", "image": ...}`, or the row's `completion_ids` when
they are g*g image tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch

from ..metrics.vqa import extract_answer
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

    def _codes(self, value: Any) -> torch.LongTensor | None:
        """VQ codes [g*g] from a PIL image / array image / codes / vocabulary ids; None when it is none of these."""
        if value is None:
            return None
        if isinstance(value, (list, tuple)) and value and not isinstance(value[0], (int, np.integer)):
            return self._codes(value[0])  # a list of images: the first one
        if isinstance(value, Mapping):
            return self._codes(value.get("image", value.get("images")))
        try:
            if isinstance(value, PIL.Image.Image) or (
                isinstance(value, np.ndarray) and value.dtype != np.int64
            ):
                return self.processor.encode_images([value])[0].cpu().long()
            ids = torch.as_tensor(value).long().flatten()
        except Exception:  # noqa: BLE001 - anything unreadable is "no image"
            return None
        codebook, offset = int(self.config.image_codebook_size), int(self.config.image_token_offset)
        image_part = ids[(ids >= offset) & (ids < offset + codebook)] - offset
        if len(image_part) == self.num_image_tokens:
            return image_part
        if len(ids) == self.num_image_tokens and int(ids.min()) >= 0 and int(ids.max()) < codebook:
            return ids
        return None

    def _completion_codes(self, completion: Any, completion_ids: Any) -> torch.LongTensor | None:
        if isinstance(completion, (list, tuple)) and completion and isinstance(completion[0], Mapping):
            for message in completion:
                content = message.get("content")
                if isinstance(content, (list, tuple)):
                    for part in content:
                        if isinstance(part, Mapping) and part.get("type") == "image":
                            return self._codes(part.get("image"))
            return self._codes(completion_ids)
        if isinstance(completion, str):
            return self._codes(completion_ids)
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
            offset = int(self.config.image_token_offset)
            pictures = self.processor.decode_images(torch.stack(images) + offset)
            described = self.pipeline(
                image=pictures, generator=self._next_generator(), **self.call_kwargs
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
        """(image codes or None, text or None, completion_usable)."""
        text = completion_text(completion) if not isinstance(completion, PIL.Image.Image) else None
        if text is not None and not isinstance(completion, (torch.Tensor, np.ndarray)):
            has_image_part = isinstance(completion, (list, tuple)) and any(
                isinstance(m, Mapping)
                and isinstance(m.get("content"), (list, tuple))
                and any(isinstance(p, Mapping) and p.get("type") == "image" for p in m["content"])
                for m in completion
            )
            if not has_image_part:
                report = extract_answer(text).strip()
                return self._image_codes_of_row(kwargs, i), report, bool(report)
        codes = self._completion_codes(completion, self._row(kwargs.get("completion_ids"), i))
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
        offset = int(self.config.image_token_offset)
        pictures = self.processor.decode_images(torch.stack(codes_list) + offset)
        steps = int(masked.sum(1).max().clamp(min=1))
        overrides = {"block_length": length, "steps": steps, **self.call_kwargs}
        out = (
            self.pipeline(
                image=pictures,
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
