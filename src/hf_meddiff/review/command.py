"""`hf-meddiff review` (serve the app) and `hf-meddiff review export` (reviews -> dataset + summary).

```
hf-meddiff review --model outputs/demo/model --data medphantom --split test --reviewer ana
hf-meddiff review --predictions outputs/demo/model/eval/predictions.jsonl --data DIR --reviewer ben
hf-meddiff review export --db reviews.sqlite --output-dir reviews_export
```
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

PROG = "hf-meddiff review"

__all__ = ["main", "parse_auth", "prepare_session"]


def _serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description=(
            "Serve a web app in which clinicians review a model's grounded answers (answer, reasoning score, a "
            "verdict per box, corrected boxes, comment). Judgements go to a SQLite database; restart with the same "
            "--db to resume. `hf-meddiff review export --help` turns them into a dataset."
        ),
        epilog="Research use only; not for clinical decisions.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--model", help="a saved model folder: predictions are generated (evaluate, task reasoning)"
    )
    source.add_argument(
        "--predictions", help="predictions.jsonl (or its folder) written by `hf-meddiff evaluate`"
    )
    p.add_argument("--data", default="medphantom", help="'medphantom' or a saved canonical dataset")
    p.add_argument("--split", default="test", help="rows of this split ('all': every row)")
    p.add_argument("--num-cases", type=int, default=200, help="MedPhantom cases when --data is medphantom")
    p.add_argument(
        "--max-samples", type=int, default=None, help="review the first this many rows of the split"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of MedPhantom and of generation")
    p.add_argument("--db", default="reviews.sqlite", help="the review database (created when missing)")
    p.add_argument("--reviewer", default=None, help="name the judgements carry (with --auth: the login name)")
    p.add_argument(
        "--model-revision", default=None, help="override the revision recorded with each judgement"
    )
    p.add_argument("--reasoning-style", default="think_before", help="prompt layout of generated rationales")
    p.add_argument("--gen-length", type=int, default=128, help="canvas of generated rationales (tokens)")
    p.add_argument("--batch-size", type=int, default=8, help="rows per generation call")
    p.add_argument("--device", default=None, help="torch device for --model (default: CUDA when available)")
    p.add_argument(
        "--predictions-dir", default=None, help="where --model writes predictions (default: next to --db)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind; a non-local one needs --auth")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--auth", default=None, help="USER:PASSWORD: require this login")
    p.add_argument(
        "--auth-file", default=None, help="a file of USER:PASSWORD lines: require one of these logins"
    )
    p.add_argument(
        "--allow-phi-columns", nargs="*", default=(), help="columns check_no_phi may skip (vouch for them)"
    )
    return p


def _export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"{PROG} export",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description=(
            "Write the current judgements as a canonical datasets.Dataset (data.parquet + README.md dataset card) "
            "and summary.json: accuracy as judged, mean reasoning score, grounding precision, IoU of model boxes "
            "against corrected boxes, Cohen's kappa where cases were reviewed twice. The folder loads with "
            "`hf-meddiff evaluate --data DIR --split all` and as a GRPO dataset (dataset_name: canonical)."
        ),
    )
    p.add_argument("--db", default="reviews.sqlite", help="the review database")
    p.add_argument("--output-dir", required=True, help="where to write the export")
    p.add_argument("--model-revision", default=None, help="only the judgements of this model revision")
    return p


def parse_auth(auth: str | None, auth_file: str | None) -> list[tuple[str, str]]:
    """`(user, password)` pairs from `--auth USER:PASSWORD` and the lines of `--auth-file` (blank lines and
    `#` comments skipped). Raises `ValueError` naming the file and line of a malformed entry.

    >>> parse_auth("ana:secret", None)
    [('ana', 'secret')]
    """
    entries: list[tuple[str, str]] = []
    sources = [("--auth", 0, auth)] if auth else []
    if auth_file:
        path = Path(auth_file)
        if not path.is_file():
            raise ValueError(f"--auth-file {auth_file}: no such file.")
        lines = path.read_text(encoding="utf-8").splitlines()
        sources += [(str(path), n, line.strip()) for n, line in enumerate(lines, start=1)]
    for where, number, text in sources:
        if not text or text.startswith("#"):
            continue
        user, sep, password = text.partition(":")
        if not sep or not user.strip() or not password:
            place = where if not number else f"{where}:{number}"
            raise ValueError(f"{place}: expected USER:PASSWORD with a non-empty user and password.")
        entries.append((user.strip(), password))
    return entries


def prepare_session(args: argparse.Namespace):
    """The `ReviewSession` of the serve options: data loaded and checked for PHI, predictions generated or read,
    cases stored in the database (a restart with the same revision reuses them)."""
    from ..data import check_no_phi
    from ..evaluation import load_data_arg
    from .app import ReviewSession
    from .cases import cases_from_predictions, model_revision, predictions_revision, read_predictions
    from .store import ReviewStore

    dataset = load_data_arg(args.data, num_cases=args.num_cases, seed=args.seed, split=args.split)
    if args.max_samples is not None:
        dataset = dataset.select(range(min(args.max_samples, len(dataset))))
    check_no_phi(dataset, allow_columns=tuple(args.allow_phi_columns or ()))
    store = ReviewStore(args.db)
    ids = [str(i) for i in dataset["id"]]
    if args.model:
        if not (Path(args.model) / "config.json").is_file():
            raise ValueError(
                f"--model {args.model}: no config.json; pass a saved model folder (a run's output_dir)."
            )
        revision = args.model_revision or model_revision(args.model)
        stored = set(store.case_ids(revision))
        if not set(ids) <= stored:
            predictions_path = _generate_predictions(args, dataset, revision)
            store.add_cases(cases_from_predictions(dataset, read_predictions(predictions_path)), revision)
        else:
            print(f"{PROG}: {len(ids)} cases of {revision} already in {args.db}; not generating again.")
    else:
        revision = args.model_revision or predictions_revision(args.predictions)
        predictions = read_predictions(args.predictions)
        stored = set(store.case_ids(revision))
        missing = [i for i in ids if i in predictions and i not in stored]
        if missing:
            store.add_cases(
                cases_from_predictions(dataset.select([ids.index(i) for i in missing]), predictions), revision
            )
    cases = store.cases(revision, ids)
    if not cases:
        raise ValueError(
            f"No case of --data {args.data} split {args.split!r} has a prediction; pass the --data and --split the "
            "evaluation used."
        )
    return ReviewSession(
        store=store, cases=cases, model_revision=revision, reviewer=args.reviewer or "reviewer"
    )


def _generate_predictions(args: argparse.Namespace, dataset, revision: str) -> Path:
    from ..evaluation import evaluate_model

    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in revision)
    out = Path(args.predictions_dir or Path(args.db).resolve().parent / f"review_predictions_{safe}")
    print(
        f"{PROG}: generating grounded answers for {len(dataset)} cases with {args.model} (written to {out})"
    )
    evaluate_model(
        args.model,
        dataset,
        output_dir=str(out),
        tasks=["reasoning"],
        reasoning_style=args.reasoning_style,
        reasoning_gen_length=args.gen_length,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        dataset_name=args.data,
        split=args.split,
    )
    return out / "predictions.jsonl"


def _serve(argv: Sequence[str]) -> int:
    parser = _serve_parser()
    args = parser.parse_args(argv)
    try:
        auth = parse_auth(args.auth, args.auth_file)
    except ValueError as err:
        parser.error(str(err))
    from .app import LOCAL_HOSTS, launch_app

    if args.host not in LOCAL_HOSTS and not auth:
        parser.error(
            f"refusing to bind {args.host} without a login: pass --auth USER:PASSWORD or --auth-file FILE, or keep "
            "the default --host 127.0.0.1."
        )
    try:
        session = prepare_session(args)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    print(
        f"{PROG}: {len(session.cases)} cases of model revision {session.model_revision}; judgements go to "
        f"{Path(args.db).resolve()}; open http://{args.host}:{args.port}",
        flush=True,
    )
    launch_app(session, host=args.host, port=args.port, auth=auth or None)
    return 0


def _export(argv: Sequence[str]) -> int:
    parser = _export_parser()
    args = parser.parse_args(argv)
    from .export import export_reviews

    if not Path(args.db).is_file():
        parser.error(f"--db {args.db}: no such review database.")
    try:
        summary = export_reviews(args.db, args.output_dir, model_revision=args.model_revision)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    print(
        (Path(args.output_dir) / "README.md")
        .read_text(encoding="utf-8")
        .split("## Summary", 1)[-1]
        .split("\n\n## ")[0]
        .strip()
    )
    print(f"Exported {summary['num_rows']} judgements to {summary['files']['data']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `hf-meddiff review …` (argv without the word `review`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "export":
        return _export(argv[1:])
    return _serve(argv)


if __name__ == "__main__":
    sys.exit(main())
