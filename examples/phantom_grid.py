"""Save a PNG grid of MedPhantom cases, one column per modality, with the finding boxes drawn.

Top row: a case without findings; bottom row: a case with findings (boxes in red, labelled).

    python examples/phantom_grid.py --out phantom_grid.png --image-size 64
"""

from __future__ import annotations

import argparse

from PIL import Image, ImageDraw

from hf_meddiff.constants import MODALITIES
from hf_meddiff.data import make_phantom_dataset
from hf_meddiff.formatting import denormalize_box


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="phantom_grid.png")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--cell", type=int, default=192, help="display size of one image in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    ds = make_phantom_dataset(400, seed=args.seed, image_size=args.image_size)
    columns = ["modality", "num_findings"]
    table = ds.select_columns(columns).to_list()
    cell, pad, header = args.cell, 4, 18
    grid = Image.new("RGB", (len(MODALITIES) * (cell + pad) + pad, 2 * (cell + pad) + pad + header), "white")
    draw = ImageDraw.Draw(grid)
    for col, modality in enumerate(MODALITIES):
        x = pad + col * (cell + pad)
        draw.text((x + 4, 3), modality, fill="black")
        normal = next(i for i, r in enumerate(table) if r["modality"] == modality and r["num_findings"] == 0)
        abnormal = next(
            i for i, r in enumerate(table) if r["modality"] == modality and r["num_findings"] >= 2
        )
        for row, index in enumerate((normal, abnormal)):
            record = ds[index]
            img = record["image"].convert("RGB").resize((cell, cell), Image.NEAREST)
            cell_draw = ImageDraw.Draw(img)
            for box in record["boxes"]:
                x0, y0, x1, y1 = denormalize_box(box["bbox"], cell, cell)
                cell_draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(255, 0, 0), width=2)
                cell_draw.text((x0 + 3, y0 + 2), f"{box['label']} ({record['severity']})", fill=(255, 255, 0))
            grid.paste(img, (x, header + pad + row * (cell + pad)))
    grid.save(args.out)
    print(f"saved {args.out} ({grid.width}x{grid.height})")


if __name__ == "__main__":
    main()
