"""The ``tlutils`` command: diagnose a folder, train on it, evaluate and predict (chapter 5).

::

    tlutils diagnose my_photos                 # measure, recommend, write a report
    tlutils train my_photos --out model.pt     # the probe, then the recipe; one file
    tlutils evaluate model.pt labelled/ --plot confusion.png --csv per_image.csv
    tlutils predict model.pt new_photos/ --top-k 3 --csv predictions.csv

Every command takes ``--seed``, ``--device``, ``--batch-size`` and ``--quiet``;
``tlutils --version`` prints the version and ``tlutils COMMAND --help`` every flag with
its default.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from .rule import TRAIN_STRATEGIES

__all__ = ["main"]

SHOW_ALL_UP_TO = 20
"""``predict`` lists every file up to this many images; above, a summary (unless --all)."""


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("common options")
    group.add_argument(
        "--seed", type=int, default=0, help="random seed (split, shuffling, init)"
    )
    group.add_argument(
        "--device",
        default=None,
        help="cpu, cuda, cuda:1 or mps (default: the fastest one found)",
    )
    group.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="images per batch (default: 32 for train and evaluate, 16 for predict, "
        "the feature extractor's choice for diagnose)",
    )
    group.add_argument(
        "--quiet", action="store_true", help="no progress bars or tables, results only"
    )
    return common


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(
        prog="tlutils",
        description="Transfer learning on your own image folder (one sub-folder per "
        "class, flat or split into train/ and val/). Part 5 of the course explains "
        "each step.",
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="version", version=f"tlutils {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = [_common()]
    d = sub.add_parser(
        "diagnose",
        help="measure a folder and recommend a strategy",
        description="Scan the folder, probe every stage of the pretrained network and "
        "recommend one of the four cases.",
        parents=common,
        formatter_class=fmt,
    )
    d.add_argument("folder", help="class folders, flat or in train/ and val/")
    d.add_argument("--image-size", type=int, default=160, help="input size in pixels")
    d.add_argument("--report", help="also write the markdown report to this file")
    d.add_argument(
        "--issues",
        help="also write the suspected label errors and duplicates to this folder: "
        "issues.png (the images) and issues.csv (one row per file)",
    )
    t = sub.add_parser(
        "train",
        help="train from the diagnosis's probe with the recipe, save a model",
        description="Diagnose the folder, then train what its case calls for: the "
        "probe itself (cases 1-2), or (cases 3-4) the course's recipe on the whole "
        "body from the final probe and on the body cut after the chosen stage, at "
        "learning rates chosen on held-out training images; the fine-tune is saved "
        "only if the verdict rule finds it at least as good as the probe on the "
        "validation images, otherwise the probe is.",
        parents=common,
        formatter_class=fmt,
    )
    t.add_argument("folder", help="class folders, flat or in train/ and val/")
    t.add_argument("--out", required=True, help="checkpoint file to write (model.pt)")
    t.add_argument(
        "--strategy",
        choices=["auto", *TRAIN_STRATEGIES],
        default="auto",
        help="auto: what the diagnosis recommends for the folder's case",
    )
    t.add_argument("--image-size", type=int, default=160, help="input size in pixels")
    t.add_argument(
        "--epochs",
        "--fine-tune-epochs",  # its earlier name, still accepted
        type=int,
        default=3,
        help="epochs of fine-tuning (chapter 3's reference budget: 3)",
    )
    t.add_argument(
        "--lr",
        type=float,
        default=None,
        help="learning rate of fine-tuning (default: chosen on held-out training "
        "images from 1e-4 and 3e-4, widened by one step if the best is at an edge)",
    )
    t.add_argument(
        "--class-weighted",
        action="store_true",
        help="weigh the fine-tuning loss by inverse class frequency (imbalanced data)",
    )
    t.add_argument("--export", help="also export a torch.export .pt2 file here")
    e = sub.add_parser(
        "evaluate",
        help="score a saved model on a labelled folder",
        description="Accuracy, balanced accuracy, per-class precision and recall, the "
        "confusion matrix and the most confidently wrong files. A folder split into "
        "train/ and val/ is scored on val/.",
        parents=common,
        formatter_class=fmt,
    )
    e.add_argument("model", help="a checkpoint written by `tlutils train`")
    e.add_argument("folder", help="one sub-folder per class, named as the model's")
    e.add_argument(
        "--plot",
        help="also save the figures to this folder: confusion.png (counts and "
        "row-normalised), mistakes.png (the worst mistakes with their images) and "
        "reliability.png (calibration)",
    )
    e.add_argument("--csv", help="also write one row per image to this CSV file")
    e.add_argument(
        "--wrong", type=int, default=10, help="how many confidently wrong files to list"
    )
    p = sub.add_parser(
        "predict",
        help="top-k classes of an image or a folder",
        description="The top classes of every image, with probabilities.",
        parents=common,
        formatter_class=fmt,
    )
    p.add_argument("model", help="a checkpoint written by `tlutils train`")
    p.add_argument("path", help="an image file or a folder of images")
    p.add_argument("--top-k", type=int, default=3, help="classes shown per image")
    p.add_argument("--csv", help="also write the predictions to this CSV file")
    p.add_argument(
        "--all",
        action="store_true",
        help=f"print every file even for more than {SHOW_ALL_UP_TO} images "
        "(otherwise a summary)",
    )
    return parser


def _write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    from .cache import atomic_write_text

    atomic_write_text(path, text)


def _write_csv(path: str | Path, header: list[str], rows: list[list]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    _write_text(path, buffer.getvalue())


def _diagnose(args: argparse.Namespace) -> None:
    from .diagnosis import diagnose

    found = diagnose(
        args.folder,
        image_size=args.image_size,
        seed=args.seed,
        device=args.device,
        progress=not args.quiet,
        batch_size=args.batch_size,
    )
    report = found.report()
    print(report)
    if args.report:
        _write_text(args.report, report + "\n")
    if args.issues:
        import matplotlib

        matplotlib.use("Agg")
        folder = Path(args.issues)
        folder.mkdir(parents=True, exist_ok=True)
        found.plot_issues().savefig(folder / "issues.png", dpi=110)
        rows = found.issues.rows()
        header = [
            "file",
            "problem",
            "class",
            "suggested",
            "probability",
            "group",
            "reason",
        ]
        _write_csv(folder / "issues.csv", header, [list(r.values()) for r in rows])
        print(f"saved the suspected label errors and duplicates to {folder}")


def _train(args: argparse.Namespace) -> None:
    from .checkpoint import export_model, save_model
    from .diagnosis import diagnose
    from .project import train_folder

    found = diagnose(
        args.folder,
        image_size=args.image_size,
        seed=args.seed,
        device=args.device,
        progress=not args.quiet,
    )
    strategy = found.train_strategy if args.strategy == "auto" else args.strategy
    print(f"diagnosis: case {found.recommendation.case}, training {strategy}")
    trained = train_folder(
        args.folder,
        strategy=strategy,
        image_size=args.image_size,
        diagnosis=found,
        epochs=args.epochs,
        lr=args.lr,
        class_weighted=args.class_weighted,
        batch_size=args.batch_size or 32,
        seed=args.seed,
        device=args.device,
        progress=not args.quiet,
    )
    if args.quiet:
        print(trained.history["verdict"])
    print(f"saved {save_model(trained, args.out)}")
    if args.export:
        print(f"exported {export_model(trained, args.export)}")


def _evaluate(args: argparse.Namespace) -> None:
    from .inference import evaluate_folder
    from .train import seed_everything

    seed_everything(args.seed)
    result = evaluate_folder(
        args.model,
        args.folder,
        batch_size=args.batch_size or 32,
        device=args.device,
        progress=not args.quiet,
    )
    print(result.report(n_wrong=args.wrong))
    if args.plot:
        import matplotlib

        from .errors import save_error_figures

        matplotlib.use("Agg")
        saved = save_error_figures(result, args.plot)
        print(f"saved {', '.join(p.name for p in saved.values())} to {args.plot}")
    if args.csv:
        rows = result.rows()
        _write_csv(args.csv, list(rows[0]), [list(r.values()) for r in rows])


def _predict(args: argparse.Namespace) -> None:
    from .inference import predict_images

    rows = predict_images(
        args.model,
        args.path,
        top_k=args.top_k,
        batch_size=args.batch_size or 16,
        device=args.device,
        progress=not args.quiet,
    )
    if args.all or len(rows) <= SHOW_ALL_UP_TO:
        for row in rows:
            top = ", ".join(
                f"{c} {p:.3f}"
                for c, p in zip(row.classes, row.probabilities, strict=True)
            )
            print(f"{row.file}\t{top}")
    else:
        counts = Counter(row.classes[0] for row in rows)
        shown = ", ".join(f"{c} {n}" for c, n in counts.most_common())
        print(f"{len(rows)} images; top class: {shown}")
        unsure = sorted(rows, key=lambda r: r.probabilities[0])[:5]
        print("least sure:")
        for row in unsure:
            print(f"  {row.file}\t{row.classes[0]} {row.probabilities[0]:.3f}")
        print("(--all lists every file; --csv writes them all to a file)")
    if args.csv:
        k = len(rows[0].classes) if rows else 0
        header = ["file"] + [f"{w}{i + 1}" for i in range(k) for w in ("class", "p")]
        body = []
        for r in rows:
            pairs = zip(r.classes, r.probabilities, strict=True)
            body.append([r.file, *(v for pair in pairs for v in pair)])
        _write_csv(args.csv, header, body)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tlutils diagnose | train | evaluate | predict`` (chapter 5); errors print one
    line and exit 1."""
    args = _parser().parse_args(argv)
    commands = {
        "diagnose": _diagnose,
        "train": _train,
        "evaluate": _evaluate,
        "predict": _predict,
    }
    try:
        commands[args.command](args)
    except BrokenPipeError:  # `tlutils ... | head`: the reader has all it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python exits
        return 0
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"tlutils {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
