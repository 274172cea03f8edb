"""Does a short GRPO run raise the mean training reward? VQA rule rewards from a trained MedDiff model.

Runs the GRPO script with the settings of `trainers/grpo_vqa.yaml` narrowed to VQA (accuracy reward, exact
rollouts, `mean_field` estimator) from `--policy` for each seed, plus a control run with the learning rate at 1e-12
(same prompts, same sampling, no learning), and prints the mean training reward of the first and second half of
the steps per run. The prompts are a fixed set of training rows (`--train-rows`) that the run visits several times,
so a rise is learning, not easier prompts.

```bash
python benchmarks/bench_grpo_reward.py --policy outputs/demo/model --data outputs/demo/data/data.parquet \
    --steps 90 --seeds 0 1 --json grpo_reward.json
```
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

SETTINGS = {
    "dataset_name": "canonical",
    "dataset_train_split": "train",
    "rewards": "accuracy",
    "tasks": "vqa",
    "completion_length_per_task": '{"vqa": 4}',
    "num_generations": "8",
    "temperature": "1.0",
    "cache_mode": "none",
    "estimator": "mean_field",
    "prompt_mask_rate": "0.0",
    "loss_type": "dapo",
    "beta": "0.0",
    "scale_rewards": "group",
    "per_device_train_batch_size": "32",
    "lr_scheduler_type": "constant",
    "use_cpu": "true",
    "logging_steps": "1",
    "report_to": "none",
    "save_strategy": "no",
}


def run(
    policy: str, data: str, out: Path, lr: float, seed: int, steps: int, rows: int, extra: list[str]
) -> dict:
    from hf_meddiff.trainer.grpo.script import main as grpo_main

    argv = [f"--{key}={value}" for key, value in SETTINGS.items()]
    argv += [
        f"--policy_path={policy}",
        f"--dataset_path={data}",
        f"--output_dir={out}",
        f"--learning_rate={lr}",
    ]
    argv += [f"--seed={seed}", f"--max_steps={steps}", f"--max_train_samples={rows}", *extra]
    start = time.perf_counter()
    status = grpo_main(argv)
    seconds = time.perf_counter() - start
    if status:
        raise SystemExit(f"GRPO stopped with status {status}")
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    rewards = [h["rewards/accuracy_reward/mean"] for h in history if "rewards/accuracy_reward/mean" in h]
    half = len(rewards) // 2
    return {
        "learning_rate": lr,
        "seed": seed,
        "steps": len(rewards),
        "seconds": round(seconds, 1),
        "first_half": statistics.mean(rewards[:half]),
        "second_half": statistics.mean(rewards[half:]),
        "rise": statistics.mean(rewards[half:]) - statistics.mean(rewards[:half]),
        "windows": [round(statistics.mean(rewards[i : i + 15]), 4) for i in range(0, len(rewards), 15)],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", required=True, help="a trained MedDiff folder (model + processor)")
    parser.add_argument(
        "--data", required=True, help="canonical dataset (Parquet / save_to_disk) with a train split"
    )
    parser.add_argument("--steps", type=int, default=90)
    parser.add_argument("--train-rows", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--no-control", action="store_true", help="skip the lr=1e-12 control run")
    parser.add_argument("--json", default=None)
    opts, extra = parser.parse_known_args(argv)
    root = Path(tempfile.mkdtemp(prefix="grpo-reward-"))
    runs = [(opts.learning_rate, seed) for seed in opts.seeds]
    if not opts.no_control:
        runs.append((1e-12, opts.seeds[0]))
    results = []
    for lr, seed in runs:
        result = run(
            opts.policy, opts.data, root / f"lr{lr}-s{seed}", lr, seed, opts.steps, opts.train_rows, extra
        )
        results.append(result)
        print(
            f"lr {lr:g} seed {seed}: mean training reward {result['first_half']:.3f} (first half) -> "
            f"{result['second_half']:.3f} (second half), rise {result['rise']:+.3f}; windows {result['windows']}; "
            f"{result['seconds']:.0f} s",
            flush=True,
        )
    summary = {"policy": opts.policy, "settings": SETTINGS, "runs": results}
    if opts.json:
        Path(opts.json).write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
