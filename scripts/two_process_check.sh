#!/usr/bin/env bash
# Two-process (DDP, CPU, gloo) masked-diffusion SFT gives the same losses as one process on the same global batch.
#
#   bash scripts/two_process_check.sh [WORK_DIR]
#
# 1. One process, global batch 8 (per_device_train_batch_size 8): builds the tokenizers and trains a few steps.
# 2. `accelerate launch` with trainers/accelerate/ddp_cpu.yaml: two processes x per_device_train_batch_size 4,
#    the same processor (from run 1), seed and data.
# 3. Compares the logged losses step by step: each example's diffusion noise is seeded by (seed, step, example),
#    so both runs see the same masks and must agree up to float summation order.
set -euo pipefail

WORK="${1:-$(mktemp -d -t meddiff-ddp-XXXX)}"
STEPS="${STEPS:-4}"
COMMON=(
  --config trainers/pretrain_embedded.yaml
  --medphantom_num_cases 48 --medphantom_image_size 32
  --image_tokenizer_preset tiny --image_tokenizer_steps 5 --text_vocab_size 600
  --model_preset tiny --response_length_per_task '{"vqa": 8, "report": 160}' --max_length 320
  --max_steps "$STEPS" --logging_steps 1 --save_strategy no --eval_strategy no --report_to none
  --dataloader_drop_last true --use_cpu true --seed 0
)
export OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1

echo "[1/3] one process, per-device batch 8 -> $WORK/one"
python -m hf_meddiff.trainer.sft.script "${COMMON[@]}" --per_device_train_batch_size 8 --output_dir "$WORK/one"

echo "[2/3] two processes (accelerate, DDP on CPU), per-device batch 4 -> $WORK/two"
accelerate launch --config_file trainers/accelerate/ddp_cpu.yaml --num_processes 2 -m hf_meddiff.cli sft \
  "${COMMON[@]}" --per_device_train_batch_size 4 --processor_path "$WORK/one" --output_dir "$WORK/two"

echo "[3/3] comparing losses"
python - "$WORK/one/trainer_state.json" "$WORK/two/trainer_state.json" <<'EOF'
import json, sys

def losses(path):
    return [(h["step"], h["loss"]) for h in json.load(open(path))["log_history"] if "loss" in h]

one, two = losses(sys.argv[1]), losses(sys.argv[2])
print(f"{'step':>4} {'1 process':>12} {'2 processes':>12}")
for (step, a), (_, b) in zip(one, two):
    print(f"{step:>4} {a:>12.6f} {b:>12.6f}")
assert len(one) == len(two) and len(one) > 0, (one, two)
worst = max(abs(a - b) for (_, a), (_, b) in zip(one, two))
assert worst < 1e-4, f"losses differ by {worst:.2e}"
print(f"OK: {len(one)} steps, largest difference {worst:.1e}")
EOF
