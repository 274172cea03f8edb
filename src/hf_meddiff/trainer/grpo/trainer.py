# Copyright 2026 The hf-meddiff Authors. Licensed under the Apache License, Version 2.0.
"""GRPO for a MedDiff masked-diffusion model, on TRL's `GRPOTrainer`.

TRL keeps the loop: batching and repeats, reward aggregation, advantages, the loss types, clipping, KL, multiple
iterations, logging, checkpointing and resume. This subclass replaces the seams a diffusion policy changes:

- `_tokenize_prompts`: a GRPO row (`tasks.py`) becomes its MedDiff prompt, image included as VQ tokens;
- `_generate_single_turn`: text completions from the block-wise diffusion sampler (with the cache and confidence
  threshold fast path), image completions from MaskGIT with classifier-free guidance, both with temperature and a
  seeded generator per row; inpainting rows keep their given tokens;
- `_generate`: image completions reach the rewards as a PIL image (their token ids come as `completion_ids`);
- `_get_per_token_logps_and_entropies`: the log-prob estimator of `likelihood_meddiff` on the completion's whole
  canvas (text keeps its `<|eos|>` padding, as in SFT), through TRL's fused LM head with `shift_labels` so nothing
  is shifted;
- `_generate_and_score_completions` / `_compute_loss`: thin wrappers that carry each row's canvas and mask seed
  with the batch and pick the iteration's mask, so old, reference and current log-probs share their masks.

With `save_on_signal` (the default) a SIGTERM or Ctrl-C ends training after the current step with a checkpoint
(`SaveOnSignalMixin`, shared with the SFT trainer); `stopped_by_signal` then holds the signal.
"""

from __future__ import annotations

import contextlib
import copy
import random
from collections.abc import Sequence
from typing import Any

import torch
from trl import GRPOTrainer
from trl.models.utils import unwrap_model_for_generation

from ...models.meddiff.likelihood_meddiff import estimator_passes, weighted_token_logps
from ..common import SaveOnSignalMixin
from .config import IMAGE_COMPLETION_TASKS, DiffusionGRPOConfig
from .rewards import bind_policy, route_rewards
from .tasks import build_grpo_dataset, prompt_token_ids

# keys this trainer adds to TRL's generation batch (tensors split and shuffled with the rows)
ROW_KEYS = ("meddiff_mask_seed", "meddiff_canvas", "meddiff_generated", "meddiff_fill_eos")


@contextlib.contextmanager
def _config_attribute(config: Any, name: str, value: Any):
    """Sets `config.name` for the duration of the block when the config has no such attribute."""
    missing = not hasattr(config, name)
    if missing:
        setattr(config, name, value)
    try:
        yield
    finally:
        if missing:
            delattr(config, name)


class DiffusionGRPOTrainer(SaveOnSignalMixin, GRPOTrainer):
    r"""
    GRPO for [`MedDiffForMaskedDiffusion`]: text and image completions from the diffusion samplers, log-probs from
    a pluggable masked-diffusion estimator, and the rewards of TRL's convention.

    Args:
        model (`MedDiffForMaskedDiffusion` or `str`): the policy, or a folder / Hub id of a MedDiff model (its
            processor is loaded from the same place when `processing_class` is not given).
        reward_funcs: TRL reward functions (`f(completions, **kwargs) -> list[float | None]`), or a mapping
            `{name: func}`. Model-based rewards with a `bind_policy(model, processor)` method are bound to the
            current policy (unwrapped from DDP / PEFT, run without gradients).
        args ([`DiffusionGRPOConfig`]): the configuration.
        train_dataset / eval_dataset (`datasets.Dataset`): canonical rows (`image` or `image_ids`, plus the fields
            of the tasks) or rows already built by `build_grpo_dataset`.
        processing_class ([`MedDiffProcessor`]): builds the prompts and decodes completions.
        reward_tasks (`dict[str, list[str]]`, *optional*): which tasks each reward scores, by reward name (other
            rows get `None`, which TRL ignores); rewards not named here use `DEFAULT_REWARD_TASKS` or score all.
        peft_config (`peft.PeftConfig`, *optional*): LoRA / QLoRA adapters; the reference policy is then the
            model with the adapter disabled (no second copy).

    Example:

    ```python
    >>> from hf_meddiff.rewards import accuracy_reward
    >>> from hf_meddiff.trainer.grpo import DiffusionGRPOConfig, DiffusionGRPOTrainer
    >>> args = DiffusionGRPOConfig("out", num_generations=4, per_device_train_batch_size=4, max_steps=2,
    ...                            completion_length_per_task={"vqa": 8}, report_to="none")
    >>> trainer = DiffusionGRPOTrainer(model, [accuracy_reward], args=args, train_dataset=rows,
    ...                                processing_class=processor)  # doctest: +SKIP
    >>> trainer.train()  # doctest: +SKIP

    ```
    """

    _tag_names = ["trl", "grpo", "hf-meddiff", "masked-diffusion"]
    _name = "DiffusionGRPO"

    def __init__(
        self,
        model: Any,
        reward_funcs: Any,
        args: DiffusionGRPOConfig | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        reward_tasks: dict[str, Sequence[str]] | None = None,
        callbacks: list | None = None,
        optimizers: tuple = (None, None),
        peft_config: Any = None,
        **kwargs: Any,
    ):
        for name, reason in (
            ("tools", "tool calls are parsed from autoregressive chat turns"),
            ("environment_factory", "environments drive multi-turn autoregressive rollouts"),
            ("rollout_func", "rollouts come from the diffusion samplers"),
        ):
            if kwargs.get(name) is not None:
                raise ValueError(f"DiffusionGRPOTrainer does not take `{name}`: {reason}.")
        if kwargs:
            raise TypeError(f"DiffusionGRPOTrainer got unexpected arguments {sorted(kwargs)}.")
        if args is None:
            args = DiffusionGRPOConfig("meddiff-grpo")
        if not isinstance(args, DiffusionGRPOConfig):
            raise TypeError(f"args must be a DiffusionGRPOConfig, got {type(args).__name__}.")
        if isinstance(model, str):
            from transformers import AutoProcessor

            from ...models.meddiff import MedDiffForMaskedDiffusion

            if processing_class is None:
                processing_class = AutoProcessor.from_pretrained(model)
            model = MedDiffForMaskedDiffusion.from_pretrained(model, **(args.model_init_kwargs or {}))
        if processing_class is None or getattr(processing_class, "image_tokenizer", None) is None:
            raise ValueError(
                "DiffusionGRPOTrainer needs the model's MedDiffProcessor, with its image tokenizer, as "
                "`processing_class` (images enter prompts as tokens)."
            )
        if args.beta != 0.0 and peft_config is None and not getattr(model.config, "_name_or_path", ""):
            raise ValueError(
                f"beta={args.beta} needs a reference policy: pass `peft_config` (the reference is then the model "
                "with the adapter disabled), or pass the model as a saved folder so a reference copy can be loaded."
            )
        if peft_config is not None and getattr(peft_config, "task_type", None) is not None:
            # TRL's `get_peft_config` asks for CAUSAL_LM, whose wrapper expects autoregressive generation hooks; a
            # masked-diffusion model takes the plain `PeftModel` (LoRA layers are the same, generation is ours).
            peft_config = copy.copy(peft_config)
            peft_config.task_type = None
        config = model.config
        canvases = [args.completion_length(task) for task in args.tasks if task not in IMAGE_COMPLETION_TASKS]
        if args.block_length is not None and any(canvas % args.block_length for canvas in canvases):
            raise ValueError(
                f"block_length={args.block_length} must divide every text canvas {sorted(set(canvases))} "
                "(completion_length_per_task / max_completion_length)."
            )
        self.processor = processing_class
        self._mask_token_id = int(config.mask_token_id)
        self.num_image_tokens = int(config.image_grid_size) ** 2
        train_dataset = build_grpo_dataset(train_dataset, processing_class, args) if train_dataset else None
        if eval_dataset is not None:
            eval_dataset = build_grpo_dataset(eval_dataset, processing_class, args)
        reward_funcs = route_rewards(reward_funcs, reward_tasks)

        # TRL reads `config.image_token_id` for a processor-based model to suppress it in autoregressive sampling,
        # which this trainer never runs; MedDiff has no single image token, so the attribute exists only meanwhile.
        with _config_attribute(config, "image_token_id", config.mask_token_id):
            super().__init__(
                model=model,
                reward_funcs=reward_funcs,
                args=args,
                train_dataset=train_dataset,
                eval_dataset=eval_dataset,
                processing_class=processing_class,
                callbacks=callbacks,
                optimizers=optimizers,
                peft_config=peft_config,
            )
        if config.eoi_token_id not in self.eos_token_ids:
            self.eos_token_ids.append(int(config.eoi_token_id))  # image completions end with <|eoi|>
        self._rows: list[dict[str, Any]] = []
        self._row_tensors: dict[str, torch.Tensor] | None = None
        self._mask_iteration = 0
        self._rollout_round = 0
        for reward in self.reward_funcs:
            bind_policy(reward, self._policy_for_rewards, processing_class)

    # -- policy and rows ----------------------------------------------------------------------------------------

    def _policy_for_rewards(self) -> Any:
        """The current policy for model-based rewards: unwrapped from DDP, adapters active under PEFT."""
        model = self.accelerator.unwrap_model(self.model)
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def _canvas_length(self, task: str) -> int:
        return (
            self.num_image_tokens + 1 if task in IMAGE_COMPLETION_TASKS else self.args.completion_length(task)
        )

    def _row_state(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Per-row tensors of a generation batch: mask seed `[B]`, canvas `[B, W]` (positions that exist),
        generated `[B, W]` (positions the policy wrote; inpainting keeps the given ones out), fill_eos `[B]`."""
        device = self.accelerator.device
        width = max(self._canvas_length(row["task"]) for row in rows)
        canvas = torch.zeros(len(rows), width, dtype=torch.bool)
        generated = torch.zeros_like(canvas)
        fill_eos = torch.zeros(len(rows), dtype=torch.bool)
        for index, row in enumerate(rows):
            length = self._canvas_length(row["task"])
            canvas[index, :length] = True
            image = row["task"] in IMAGE_COMPLETION_TASKS
            body = self.num_image_tokens if image else length
            keep = list(row.get("keep_mask") or [])
            generated[index, :body] = True if not keep else ~torch.tensor(keep[:body], dtype=torch.bool)
            fill_eos[index] = not image
        seeds = torch.tensor([self._row_seed(index, "mask") for index in range(len(rows))], dtype=torch.long)
        return {
            "meddiff_mask_seed": seeds.to(device),
            "meddiff_canvas": canvas.to(device),
            "meddiff_generated": generated.to(device),
            "meddiff_fill_eos": fill_eos.to(device),
        }

    # -- prompts and rollouts -----------------------------------------------------------------------------------

    def _tokenize_prompts(self, prompts: list) -> tuple[list[list[int]], None, dict]:
        if len(self._rows) != len(prompts):
            raise RuntimeError(
                f"DiffusionGRPOTrainer lost track of its rows ({len(self._rows)} rows for {len(prompts)} prompts)."
            )
        return [prompt_token_ids(row, self.processor) for row in self._rows], None, {}

    def _row_seed(self, index: int, salt: str) -> int:
        """A seed for row `index` of this process's generation batch, from the row's global position (process
        index * rows per process + index), so one process and several see the same seeds for the same row."""
        position = self.accelerator.process_index * len(self._rows) + index
        return random.Random(f"{self.args.seed}-{self._rollout_round}-{position}-{salt}").randrange(2**31)

    def _row_generators(self, indices: Sequence[int], salt: str) -> list[torch.Generator]:
        return [
            torch.Generator(self.accelerator.device).manual_seed(self._row_seed(i, salt)) for i in indices
        ]

    def _left_padded(self, prompt_ids: Sequence[Sequence[int]], indices: Sequence[int]):
        device = self.accelerator.device
        width = max(len(prompt_ids[i]) for i in indices)
        pad = int(self.processor.tokenizer.pad_token_id)
        ids = torch.full((len(indices), width), pad, dtype=torch.long)
        mask = torch.zeros((len(indices), width), dtype=torch.long)
        for row, i in enumerate(indices):
            ids[row, width - len(prompt_ids[i]) :] = torch.tensor(prompt_ids[i])
            mask[row, width - len(prompt_ids[i]) :] = 1
        return ids.to(device), mask.to(device)

    def _text_completions(self, model, prompt_ids, indices, length) -> dict[int, list[int]]:
        args, eos = self.args, int(model.config.eos_token_id)
        pad = int(model.config.pad_token_id)
        ids, mask = self._left_padded(prompt_ids, indices)
        infill = {i for i in indices if self._rows[i]["task"] == "inpaint_text"}
        sample = {
            "gen_length": length,
            "block_length": args.block_length
            if args.block_length and length % args.block_length == 0
            else None,
            "steps": args.diffusion_steps,
            "temperature": self.temperature,
            "top_k": self.top_k or None,
            "top_p": self.top_p if self.top_p < 1.0 else None,
            "threshold": args.threshold,
            "cache_mode": args.cache_mode,
        }
        if sample["block_length"] is None:
            sample["block_length"] = getattr(model.generation_config, "block_length", None)
            if sample["block_length"] and length % sample["block_length"]:
                sample["block_length"] = None
        if sample["steps"] is not None:
            blocks = length // (sample["block_length"] or length)
            sample["steps"] = max(blocks, -(-sample["steps"] // blocks) * blocks)
        if infill:
            if len(infill) != len(indices):
                raise RuntimeError("text inpainting rows must be generated apart from the other text rows.")
            target = torch.tensor([self._rows[i]["target_ids"] for i in indices], device=ids.device)
            keep = torch.tensor([self._rows[i]["keep_mask"] for i in indices], device=ids.device)
            sample.pop("gen_length")
            out = model.generate(
                ids, mask, response_ids=target, response_keep_mask=keep,
                generator=self._row_generators(indices, "text"), **sample,
            )  # fmt: skip
        else:
            out = model.generate(ids, mask, generator=self._row_generators(indices, "text"), **sample)
        completions = {}
        for row, i in enumerate(indices):
            tokens = out[row].tolist()
            if pad in tokens:  # the sampler writes pad from the first <|eos|> on
                tokens = tokens[: tokens.index(pad)] + [eos]
            completions[i] = tokens
        return completions

    def _image_completions(self, model, prompt_ids, indices) -> dict[int, list[int]]:
        args, offset = self.args, int(model.config.image_token_offset)
        ids, mask = self._left_padded(prompt_ids, indices)
        kwargs: dict[str, Any] = {}
        if self._rows[indices[0]]["task"] == "inpaint_image":
            kwargs["image_ids"] = torch.tensor(
                [self._rows[i]["target_ids"] for i in indices], device=ids.device
            )
            kwargs["image_ids"] = kwargs["image_ids"] + offset
            kwargs["image_keep_mask"] = torch.tensor(
                [self._rows[i]["keep_mask"] for i in indices], device=ids.device
            )
        out = model.generate_images(
            ids, mask, image_steps=args.image_steps, cfg_scale=args.cfg_scale,
            image_temperature=args.image_temperature, generator=self._row_generators(indices, "image"), **kwargs,
        )  # fmt: skip
        eoi = int(model.config.eoi_token_id)
        return {i: out[row].tolist() + [eoi] for row, i in enumerate(indices)}

    def _generate_single_turn(
        self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False
    ):
        groups: dict[tuple, list[int]] = {}
        for i, row in enumerate(self._rows):
            task = row["task"]
            if task in IMAGE_COMPLETION_TASKS:
                key = ("image", task)
            else:
                key = ("text", self.args.completion_length(task), task == "inpaint_text")
            groups.setdefault(key, []).append(i)
        completions: dict[int, list[int]] = {}
        with (
            unwrap_model_for_generation(
                self.model_wrapped,
                self.accelerator,
                gather_deepspeed3_params=self.args.ds3_gather_for_generation,
            ) as unwrapped,
            torch.no_grad(),
        ):
            for key, indices in groups.items():
                if key[0] == "image":
                    completions.update(self._image_completions(unwrapped, prompt_ids, indices))
                else:
                    completions.update(self._text_completions(unwrapped, prompt_ids, indices, key[1]))
        return [completions[i] for i in range(len(self._rows))], None

    def _generate(self, prompts: list):
        output = list(super()._generate(prompts))
        completions, completion_ids = output[3], output[1]
        image_rows = [i for i, row in enumerate(self._rows) if row["task"] in IMAGE_COMPLETION_TASKS]
        if image_rows:
            body = torch.tensor([completion_ids[i][: self.num_image_tokens] for i in image_rows])
            pictures = self.processor.decode_images(body)
            for i, picture in zip(image_rows, pictures, strict=True):
                completions[i] = picture
        output[3] = completions
        return tuple(output)

    # -- log-probabilities --------------------------------------------------------------------------------------

    def _mask_seeds(self, seeds: torch.Tensor) -> list[int]:
        return [int(seed) * 1_000_003 + 7_919 * self._mask_iteration for seed in seeds.tolist()]

    def _get_per_token_logps_and_entropies(
        self,
        model,
        input_ids,
        attention_mask,
        logits_to_keep,
        batch_size=None,
        compute_entropy=False,
        compute_aux_loss=False,
        **multimodal_kwargs,
    ):
        """Per-token log-probs of the completions `[B, logits_to_keep]` from the configured estimator.

        The completion's canvas is rebuilt first: TRL's right padding after a text completion's `<|eos|>` becomes
        `<|eos|>` again up to the task's canvas (what the sampler wrote and SFT trained on), and is visible to
        attention; positions beyond a row's canvas stay padding."""
        rows = self._row_tensors
        if rows is None or rows["meddiff_mask_seed"].shape[0] != input_ids.shape[0]:
            raise RuntimeError("DiffusionGRPOTrainer: log-probs were asked for rows it did not generate.")
        tokenizer = self.processor.tokenizer
        eos, pad = int(tokenizer.eos_token_id), int(tokenizer.pad_token_id)
        prompt_length = input_ids.shape[1] - logits_to_keep
        canvas, generated = rows["meddiff_canvas"], rows["meddiff_generated"]
        width = canvas.shape[1]
        batch_size = batch_size or input_ids.size(0)
        all_logps, all_entropies = [], []
        for start in range(0, input_ids.size(0), batch_size):
            end = min(start + batch_size, input_ids.size(0))
            completion = torch.full((end - start, width), pad, dtype=input_ids.dtype, device=input_ids.device)
            completion[:, :logits_to_keep] = input_ids[start:end, prompt_length:]
            written = torch.zeros_like(completion, dtype=torch.bool)
            written[:, :logits_to_keep] = attention_mask[start:end, prompt_length:].bool()
            fill = canvas[start:end] & ~written & rows["meddiff_fill_eos"][start:end, None]
            completion = completion.masked_fill(fill, eos)
            ids = torch.cat([input_ids[start:end, :prompt_length], completion], dim=1)
            mask = torch.cat([attention_mask[start:end, :prompt_length], canvas[start:end].long()], dim=1)
            response = torch.zeros_like(ids, dtype=torch.bool)
            response[:, prompt_length:] = generated[start:end]
            prompt_part = torch.zeros_like(response)
            prompt_part[:, :prompt_length] = attention_mask[start:end, :prompt_length].bool()
            passes = estimator_passes(
                self.args.estimator,
                response,
                self._mask_seeds(rows["meddiff_mask_seed"][start:end]),
                prompt_mask=prompt_part,
                prompt_mask_rate=self.args.prompt_mask_rate,
                mask_range=tuple(self.args.coupled_mask_range),
            )
            with self.accelerator.autocast():
                logps, entropy = weighted_token_logps(
                    model, ids, mask, passes, mask_token_id=self._mask_token_id, temperature=self.temperature,
                    fused_lm_head=True, compute_entropy=compute_entropy,
                )  # fmt: skip
            keep = slice(prompt_length, prompt_length + logits_to_keep)
            all_logps.append(logps[:, keep])
            if compute_entropy:
                all_entropies.append(entropy[:, keep])
        logps = torch.cat(all_logps, dim=0)
        entropies = torch.cat(all_entropies, dim=0) if compute_entropy else None
        aux = torch.zeros((), device=logps.device) if compute_aux_loss else None
        return logps, entropies, aux

    # -- the generation batch and the loss ----------------------------------------------------------------------

    def _generate_and_score_completions(self, inputs):
        self._rows = [dict(row) for row in inputs]
        self._row_tensors = self._row_state(self._rows)
        self._mask_iteration = 0
        try:
            output = super()._generate_and_score_completions(inputs)
            output.update(self._row_tensors)
            extra = self.num_iterations - 1 if self.model.training else 0
            prompt_completion = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
            attention = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
            logits_to_keep = output["completion_ids"].size(1)
            for key, model in (("old_per_token_logps", self.model), ("ref_per_token_logps", self.ref_model)):
                if extra == 0 or key not in output:
                    continue
                per_iteration = [output[key]]
                with torch.no_grad(), self._reference_context(key, model) as scorer:
                    for iteration in range(1, self.num_iterations):
                        self._mask_iteration = iteration
                        logps, _, _ = self._get_per_token_logps_and_entropies(
                            scorer, prompt_completion, attention, logits_to_keep,
                            batch_size=self.args.per_device_train_batch_size,
                        )  # fmt: skip
                        per_iteration.append(logps)
                output[f"{key}_by_iteration"] = torch.stack(per_iteration, dim=1)
        finally:
            self._mask_iteration = 0
        if self.model.training:
            self._rollout_round += 1
        return output

    @contextlib.contextmanager
    def _reference_context(self, key: str, model: Any):
        """The scorer of `key`: the policy, the reference model, or the policy with its adapter disabled."""
        if key == "old_per_token_logps" or model is not None:
            yield model if model is not None else self.model
            return
        from trl.trainer.utils import use_adapter

        unwrapped = self.accelerator.unwrap_model(self.model)
        name = "ref" if "ref" in getattr(unwrapped, "peft_config", {}) else None
        with use_adapter(unwrapped, adapter_name=name):
            yield self.model

    def _compute_loss(self, model, inputs):
        generate_every = self.args.steps_per_generation * self.num_iterations
        iteration = (self._step % generate_every) // self.args.steps_per_generation if model.training else 0
        inputs = dict(inputs)
        for key in ("old_per_token_logps", "ref_per_token_logps"):
            if f"{key}_by_iteration" in inputs:
                inputs[key] = inputs.pop(f"{key}_by_iteration")[:, iteration]
        self._row_tensors = {key: inputs[key] for key in ROW_KEYS}
        self._mask_iteration = iteration
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._mask_iteration = 0


__all__ = ["DiffusionGRPOTrainer"]
