"""Evaluate a trained MedDiff folder and prepare (or push) its Hub repository with a model card.

    python examples/evaluate_and_share.py --model outputs/demo/model --data outputs/demo/data
    python examples/evaluate_and_share.py --model outputs/demo/model --repo-id me/meddiff-phantom --push

Without `--push` nothing leaves the machine: the repository is written to `--hub-folder` so you can read the
card (README.md) and reload the folder with `AutoModelForMaskedLM` / `AutoProcessor` first.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hf_meddiff.evaluation import evaluate_model, load_data_arg, load_model_and_processor
from hf_meddiff.hub import push_meddiff_to_hub, render_model_card, save_meddiff_for_hub


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", required=True, help="a folder saved by `hf-meddiff sft` / `hf-meddiff demo`"
    )
    parser.add_argument("--data", default="medphantom", help="'medphantom' or a saved canonical dataset")
    parser.add_argument("--split", default="test")
    parser.add_argument("--max-samples", type=int, default=32)
    parser.add_argument("--repo-id", default="me/meddiff-phantom")
    parser.add_argument("--hub-folder", default="outputs/hub_preview")
    parser.add_argument("--push", action="store_true", help="upload to the Hub (needs a token and network)")
    args = parser.parse_args()

    # 1. evaluate on the split: results.json / results.md / plots next to the model
    model, processor = load_model_and_processor(args.model)
    dataset = load_data_arg(args.data, split=args.split)
    summary = evaluate_model(
        model,
        dataset,
        processor=processor,
        output_dir=Path(args.model) / "eval",
        max_samples=args.max_samples,
        trainer_state=args.model,
        dataset_name="MedPhantom" if args.data == "medphantom" else args.data,
        split=args.split,
    )
    print(Path(summary["files"]["markdown"]).read_text())

    # 2. the model card: metadata + model-index from the results, recipe, "not for clinical decisions"
    recipe_file = Path(args.model) / "sft_recipe.json"
    recipe = json.loads(recipe_file.read_text()) if recipe_file.is_file() else None
    card = render_model_card(
        model_name=args.repo_id.split("/")[-1],
        repo_id=args.repo_id,
        datasets=["medphantom"] if args.data == "medphantom" else None,
        eval_results=summary,
        training_recipe=recipe,
        model_config=model.config,
        num_parameters=model.num_parameters(),
    )

    # 3. write the repository locally, or push it
    if args.push:
        commit = push_meddiff_to_hub(model, processor, args.repo_id, card=card)
        print(f"pushed: {commit}")
    else:
        folder = save_meddiff_for_hub(model, processor, args.hub_folder, card=card)
        print(f"repository written to {folder} (pass --push to upload it to {args.repo_id})")


if __name__ == "__main__":
    main()
