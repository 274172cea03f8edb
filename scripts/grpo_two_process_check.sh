#!/usr/bin/env bash
# Two-process (DDP, CPU, gloo) GRPO of a MedDiff policy logs the same rewards and losses as one process on the
# same global batch.
#
#   bash scripts/grpo_two_process_check.sh [WORK_DIR]
#
# 1. Saves a tiny MedDiff policy (model + processor) to WORK_DIR/policy.
# 2. One process, per-device batch 8 (2 prompts x 4 completions), report writing with the report reward.
# 3. `accelerate launch` with trainers/accelerate/ddp_cpu.yaml: two processes x per-device batch 4.
# 4. Compares the logged reward and loss step by step: every row's sampler and mask seeds come from the row's
#    global position, so both runs draw the same completions and masks and must agree up to float summation order.
set -euo pipefail

WORK="${1:-$(mktemp -d -t meddiff-grpo-ddp-XXXX)}"
STEPS="${STEPS:-4}"
export OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1

echo "[1/4] tiny policy -> $WORK/policy"
python - "$WORK/policy" <<'PY'
import sys

import torch

from hf_meddiff import (MedDiffConfig, MedDiffForMaskedDiffusion, MedDiffImageProcessor, MedDiffImageTokenizer,
                        MedDiffProcessor, train_text_tokenizer)
from hf_meddiff.data import make_phantom_dataset

torch.manual_seed(0)
cases = make_phantom_dataset(32, seed=0, image_size=32)
tokenizer = train_text_tokenizer(list(cases["report"]) + list(cases["question"]), vocab_size=400)
processor = MedDiffProcessor(MedDiffImageProcessor(size=32), tokenizer,
                             image_tokenizer=MedDiffImageTokenizer.from_config_preset("tiny"))
model = MedDiffForMaskedDiffusion(MedDiffConfig.from_preset("tiny", **processor.model_config_kwargs()))
model.save_pretrained(sys.argv[1])
processor.save_pretrained(sys.argv[1])
PY

COMMON=(
  --config trainers/grpo_vqa.yaml --policy_path "$WORK/policy" --medphantom_num_cases 32
  --tasks report --rewards report repetition --reward_weights 1.0 1.0 --completion_length_per_task '{"report": 16}'
  --num_generations 4 --max_steps "$STEPS" --logging_steps 1 --save_strategy no --learning_rate 1e-3
  --use_cpu true --seed 0 --dataloader_drop_last true
)

echo "[2/4] one process, per-device batch 8 -> $WORK/one"
python -m hf_meddiff.cli grpo "${COMMON[@]}" --per_device_train_batch_size 8 --output_dir "$WORK/one"

echo "[3/4] two processes (accelerate, DDP on CPU), per-device batch 4 -> $WORK/two"
accelerate launch --config_file trainers/accelerate/ddp_cpu.yaml --num_processes 2 -m hf_meddiff.cli grpo \
  "${COMMON[@]}" --per_device_train_batch_size 4 --output_dir "$WORK/two"

echo "[4/4] comparing rewards and losses"
python - "$WORK/one/trainer_state.json" "$WORK/two/trainer_state.json" <<'PY'
import json, sys

def rows(path):
    return [(h["step"], h["reward"], h["loss"], h["grad_norm"])
            for h in json.load(open(path))["log_history"] if "reward" in h]

one, two = rows(sys.argv[1]), rows(sys.argv[2])
print(f"{'step':>4} {'reward 1p':>10} {'reward 2p':>10} {'loss 1p':>12} {'loss 2p':>12} {'grad 1p':>9} {'grad 2p':>9}")
for (step, r1, l1, g1), (_, r2, l2, g2) in zip(one, two):
    print(f"{step:>4} {r1:>10.5f} {r2:>10.5f} {l1:>12.6f} {l2:>12.6f} {g1:>9.5f} {g2:>9.5f}")
assert len(one) == len(two) and one, (one, two)
worst_reward = max(abs(a[1] - b[1]) for a, b in zip(one, two))
worst_loss = max(abs(a[2] - b[2]) for a, b in zip(one, two))
assert any(a[3] for a in one), "no step had a gradient (every group scored alike): nothing was compared"
worst_grad = max(abs(a[3] - b[3]) / max(abs(a[3]), 1e-8) for a, b in zip(one, two) if a[3])
assert worst_reward < 1e-5 and worst_loss < 1e-4 and worst_grad < 1e-3, (
    f"rewards differ by {worst_reward:.2e}, losses by {worst_loss:.2e}, gradient norms by {worst_grad:.2e} (relative)"
)
print(f"OK: {len(one)} steps, largest differences: reward {worst_reward:.1e}, loss {worst_loss:.1e}, "
      f"gradient norm {worst_grad:.1e} (relative)")
PY
