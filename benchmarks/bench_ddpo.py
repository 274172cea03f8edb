"""Benchmark: MedDDPOTrainer vs TRL 0.23.1's DDPOTrainer on the same tiny Stable Diffusion and settings.

Both trainers run side by side, each in its own process, on one tiny pipeline saved to a temporary folder
(UNet `block_out_channels=(8, 16)`, VAE `[8, 16]`, 2-layer CLIP text encoder; 32 x 32 images), with the same
LoRA (r=4, alpha=4 on to_q/to_k/to_v/to_out.0), DDIM steps, eta, guidance, batch sizes, timestep fraction,
per-prompt tracking and a cheap reward (mean brightness), so the figures measure the trainers.

TRL removed DDPOTrainer after 0.23.1, so its side runs in a separate virtual environment
(`--venv`, default ~/.cache/hf-meddiff/bench-venv, outside the repository) created with
`--system-site-packages` (reusing the installed torch and accelerate) and
`trl==0.23.1 diffusers==0.35.2 transformers==4.56.2 peft==0.17.1`. The TRL-side driver is written at run time
from the text in this file. When the environment cannot be created the TRL side is skipped with a message.

The two trainers run interleaved, epoch by epoch (each in its own process, started once; the order alternates
every epoch), so a machine that gets busy halfway slows both alike. Reported: samples/s (sampling + decoding +
reward, per image), train time per epoch and per optimiser step, epoch time, and `speedup_vs_trl_ddpo` = the median
over epochs of TRL epoch time / MedDDPO epoch time of the same epoch (the first epoch is warm-up), with the
per-epoch ratios in `epoch_ratios_trl_over_ours`.

    python benchmarks/bench_ddpo.py --json bench_ddpo.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

TRL_PINS = ["trl==0.23.1", "diffusers==0.35.2", "transformers==4.56.2", "peft==0.17.1"]
PROMPTS = [
    "dermoscopy image: melanoma, severe",
    "dermoscopy image: nevus, mild",
    "dermoscopy image: angioma, moderate",
    "dermoscopy image: melanoma, mild",
]

TRL_DRIVER = textwrap.dedent(
    """
    import json, random, sys, time
    import torch
    settings = json.loads(sys.argv[1])
    torch.set_num_threads(settings["threads"])
    import accelerate
    accelerate.PartialState()  # TRL 0.23.1's pipeline wrapper needs the state to exist before it is built
    from trl import DDPOConfig, DDPOTrainer, DefaultDDPOStableDiffusionPipeline

    def prompt_fn(rng=random.Random(settings["seed"])):
        return rng.choice(settings["prompts"]), {}

    def reward_fn(images, prompts, metadata):
        return images.float().mean(dim=(1, 2, 3)), {}

    config = DDPOConfig(
        num_epochs=settings["epochs"], sample_num_steps=settings["steps"], sample_eta=1.0,
        sample_guidance_scale=settings["guidance"], sample_batch_size=settings["batch"],
        sample_num_batches_per_epoch=settings["batches"], train_batch_size=settings["train_batch"],
        train_learning_rate=3e-4, train_timestep_fraction=settings["timestep_fraction"],
        train_gradient_accumulation_steps=1, train_num_inner_epochs=1, per_prompt_stat_tracking=True,
        per_prompt_stat_tracking_min_count=4, mixed_precision="no", save_freq=10**9, seed=settings["seed"],
        project_kwargs={"project_dir": settings["out"]},
    )
    pipeline = DefaultDDPOStableDiffusionPipeline(settings["pipeline"], use_lora=True)
    trainer = DDPOTrainer(config, reward_fn, prompt_fn, pipeline)
    timers = {"sample": 0.0}
    generate, rewards = trainer._generate_samples, trainer.compute_rewards
    def timed(fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter(); out = fn(*args, **kwargs); timers["sample"] += time.perf_counter() - t0
            return out
        return wrapper
    trainer._generate_samples, trainer.compute_rewards = timed(generate), timed(rewards)
    step, epoch = 0, 0
    print("BENCH_READY", flush=True)
    for line in sys.stdin:  # one epoch per "step" line, so the caller can interleave two trainers
        if line.strip() != "step":
            break
        timers["sample"] = 0.0
        t0 = time.perf_counter()
        new_step = trainer.step(epoch, step)
        total = time.perf_counter() - t0
        print("BENCH_EPOCH " + json.dumps({"epoch_s": total, "sample_s": timers["sample"],
              "train_s": total - timers["sample"], "optimizer_steps": new_step - step}), flush=True)
        step, epoch = new_step, epoch + 1
    """
)

OURS_DRIVER = textwrap.dedent(
    """
    import json, sys, time
    import torch
    settings = json.loads(sys.argv[1])
    torch.set_num_threads(settings["threads"])
    from diffusers import StableDiffusionPipeline
    from hf_meddiff import MedDDPOConfig, MedDDPOTrainer

    def reward_fn(images, prompts, **kwargs):
        return images.float().mean(dim=(1, 2, 3)).tolist()

    config = MedDDPOConfig(
        output_dir=settings["out"], num_epochs=settings["epochs"], sample_num_steps=settings["steps"], sample_eta=1.0,
        sample_guidance_scale=settings["guidance"], sample_batch_size=settings["batch"],
        sample_num_batches_per_epoch=settings["batches"], train_batch_size=settings["train_batch"],
        train_learning_rate=3e-4, train_timestep_fraction=settings["timestep_fraction"],
        train_gradient_accumulation_steps=1, train_num_inner_epochs=1, per_prompt_stat_tracking=True,
        per_prompt_stat_tracking_min_count=4, lora_rank=4, lora_alpha=4.0, seed=settings["seed"],
        train_timesteps_per_forward=settings["timesteps_per_forward"],
    )
    pipeline = StableDiffusionPipeline.from_pretrained(settings["pipeline"])
    trainer = MedDDPOTrainer(config, pipeline, reward_fn, prompts=settings["prompts"])
    print("BENCH_READY", flush=True)
    for line in sys.stdin:  # one epoch per "step" line, so the caller can interleave two trainers
        if line.strip() != "step":
            break
        step = trainer.global_step
        t0 = time.perf_counter()
        stats = trainer.step()
        total = time.perf_counter() - t0
        print("BENCH_EPOCH " + json.dumps({"epoch_s": total, "sample_s": stats["sample_time_s"],
              "train_s": total - stats["sample_time_s"], "optimizer_steps": trainer.global_step - step}), flush=True)
    """
)


def build_pipeline(directory: Path) -> None:
    """Save the tiny pipeline, plus vocab.json/merges.txt so older transformers' slow CLIPTokenizer loads it."""
    from hf_meddiff.trainer.ddpo.tiny import build_tiny_stable_diffusion

    pipe = build_tiny_stable_diffusion(seed=0)
    pipe.save_pretrained(directory)
    model = json.loads((directory / "tokenizer" / "tokenizer.json").read_text())["model"]
    (directory / "tokenizer" / "vocab.json").write_text(json.dumps(model["vocab"]))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (directory / "tokenizer" / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def ensure_venv(venv: Path) -> tuple[Path | None, str]:
    """Python of a venv with TRL 0.23.1 and its pins; (None, reason) when it cannot be made."""
    python = venv / "bin" / "python"
    check = [
        str(python),
        "-c",
        "import trl, diffusers, transformers, peft; assert trl.__version__ == '0.23.1'",
    ]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python, "existing"
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *TRL_PINS],
            check=True,
            capture_output=True,
            timeout=1800,
        )
        subprocess.run(check, check=True, capture_output=True)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as err:
        detail = getattr(err, "stderr", b"") or b""
        return (
            None,
            f"could not install {' '.join(TRL_PINS)} into {venv}: {err} {detail.decode(errors='ignore')[-500:]}",
        )
    return python, "created"


class Driver:
    """A trainer in its own process that runs one epoch per `step()` call (the others wait meanwhile)."""

    def __init__(self, name: str, python: str, driver: str, settings: dict, env: dict):
        self.name = name
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
            f.write(driver)
            self.path = f.name
        self.stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115 - a file, not a pipe: a chatty driver never blocks
        self.proc = subprocess.Popen(
            [python, self.path, json.dumps(settings)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            env=env,
        )
        self.epochs: list[dict] = []
        self._expect("BENCH_READY")

    def _expect(self, prefix: str) -> str:
        for line in self.proc.stdout:
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
        self.proc.wait()
        self.stderr.seek(0)
        raise RuntimeError(
            f"{self.name} driver failed (rc={self.proc.returncode}):\n{self.stderr.read()[-3000:]}"
        )

    def step(self) -> dict:
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        epoch = json.loads(self._expect("BENCH_EPOCH "))
        self.epochs.append(epoch)
        return epoch

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        self.stderr.close()
        os.unlink(self.path)


def run_interleaved(drivers: list[Driver], epochs: int) -> None:
    """Epoch k of every trainer runs back to back (the order alternates), so a busy machine slows both alike."""
    for epoch in range(epochs):
        order = drivers if epoch % 2 == 0 else drivers[::-1]
        for driver in order:
            driver.step()


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def summarise(epochs: list[dict], samples_per_epoch: int) -> dict:
    measured = epochs[1:] or epochs  # the first epoch warms up
    mean = lambda key: sum(e[key] for e in measured) / len(measured)  # noqa: E731
    steps = max(1, round(mean("optimizer_steps")))
    return {
        "epoch_s": mean("epoch_s"),
        "samples_per_s": samples_per_epoch / mean("sample_s"),
        "train_s_per_epoch": mean("train_s"),
        "train_step_s": mean("train_s") / steps,
        "optimizer_steps_per_epoch": steps,
        "epochs_measured": len(measured),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", help="write the figures to this JSON file")
    parser.add_argument("--venv", default=str(Path.home() / ".cache" / "hf-meddiff" / "bench-venv"))
    parser.add_argument("--epochs", type=int, default=6, help="epochs per trainer (the first is warm-up)")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps")
    parser.add_argument("--batch", type=int, default=8, help="sample batch size")
    parser.add_argument("--batches", type=int, default=2, help="sample batches per epoch")
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--timestep-fraction", type=float, default=1.0)
    parser.add_argument(
        "--timesteps-per-forward", type=int, default=0, help="MedDDPO: timesteps per UNet pass (0: all)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for both trainers")
    args = parser.parse_args(argv)

    results: dict = {"settings": vars(args).copy(), "machine": {"cpu_count": os.cpu_count()}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build_pipeline(tmp / "pipeline")
        settings = {
            "pipeline": str(tmp / "pipeline"),
            "prompts": PROMPTS,
            "seed": 0,
            "threads": args.threads,
            "epochs": args.epochs,
            "steps": args.steps,
            "batch": args.batch,
            "batches": args.batches,
            "train_batch": args.train_batch,
            "guidance": args.guidance,
            "timestep_fraction": args.timestep_fraction,
            "timesteps_per_forward": args.timesteps_per_forward,
        }
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        samples = args.batch * args.batches

        drivers = [
            Driver("meddiff_ddpo", sys.executable, OURS_DRIVER, {**settings, "out": str(tmp / "ours")}, env)
        ]
        python, how = ensure_venv(Path(args.venv).expanduser())
        if python is None:
            print(f"Skipping the TRL side: {how}")
            results["skipped"] = how
        else:
            trl_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
            drivers.append(
                Driver("trl_ddpo", str(python), TRL_DRIVER, {**settings, "out": str(tmp / "trl")}, trl_env)
            )
        t0 = time.perf_counter()
        try:
            run_interleaved(drivers, args.epochs)
        finally:
            for driver in drivers:
                driver.close()
        results["wall_s"] = time.perf_counter() - t0
        for driver in drivers:
            results[driver.name] = {**summarise(driver.epochs, samples), "epochs": driver.epochs}
        results.setdefault("trl_ddpo", None)
        if results["trl_ddpo"] is None:
            results["speedup_vs_trl_ddpo"] = None
        else:
            ours, trl = drivers[0].epochs[1:], drivers[1].epochs[1:]  # the first epoch warms up
            ratios = [t["epoch_s"] / o["epoch_s"] for o, t in zip(ours, trl)]
            results["epoch_ratios_trl_over_ours"] = ratios
            results["speedup_vs_trl_ddpo"] = median(ratios)  # median of interleaved per-epoch ratios
            results["sampling_speedup"] = median(
                [o["sample_s"] and t["sample_s"] / o["sample_s"] for o, t in zip(ours, trl)]
            )
            results["train_speedup"] = median([t["train_s"] / o["train_s"] for o, t in zip(ours, trl)])
            results["trl_ddpo"]["venv"] = how

    print(json.dumps({k: v for k, v in results.items() if k not in ("settings",)}, indent=2, default=float))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float))
    return results


if __name__ == "__main__":
    main()
