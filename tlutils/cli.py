"""The ``tlutils`` command: diagnose a folder, train on it, predict with the model (chapter 5).

::

    tlutils diagnose my_photos                 # measure, recommend, write a report
    tlutils train my_photos --out model.pt     # the chapter-4 recipe, one checkpoint file
    tlutils predict model.pt new_photos/ --top-k 3 --csv predictions.csv
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tlutils", description="Transfer learning on your own image folder."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("diagnose", help="measure a folder and recommend a strategy")
    d.add_argument("folder", help="class folders, flat or in train/ and val/")
    d.add_argument("--image-size", type=int, default=160)
    d.add_argument("--report", help="also write the markdown report to this file")
    t = sub.add_parser("train", help="train with the chapter-4 recipe, save a model")
    t.add_argument("folder")
    t.add_argument("--out", required=True, help="checkpoint file to write (model.pt)")
    t.add_argument("--strategy", choices=["auto", "linear_probe", "fine_tune"])
    t.add_argument("--image-size", type=int, default=160)
    t.add_argument("--warm-up-epochs", type=int, default=3)
    t.add_argument("--fine-tune-epochs", type=int, default=5)
    t.add_argument("--lr", type=float, default=1e-4)
    t.add_argument("--patience", type=int, default=2)
    t.add_argument("--class-weighted", action="store_true", help="for imbalanced data")
    t.add_argument("--export", help="also export a torch.export .pt2 file here")
    p = sub.add_parser("predict", help="top-k classes of an image or a folder")
    p.add_argument("model", help="a checkpoint written by `tlutils train`")
    p.add_argument("path", help="an image file or a folder of images")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--csv", help="also write the predictions to this CSV file")
    return parser


def _write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.")
    with os.fdopen(fd, "w", newline="") as f:
        f.write(text)
    os.replace(tmp, path)


def _diagnose(args: argparse.Namespace) -> None:
    from .diagnosis import diagnose

    report = diagnose(args.folder, image_size=args.image_size).report()
    print(report)
    if args.report:
        _write_text(args.report, report + "\n")


def _train(args: argparse.Namespace) -> None:
    from .checkpoint import export_model, save_model
    from .diagnosis import diagnose
    from .project import train_folder

    strategy = args.strategy or "auto"
    if strategy == "auto":
        found = diagnose(args.folder, image_size=args.image_size)
        strategy = found.train_strategy
        print(f"diagnosis: case {found.recommendation.case}, training {strategy}")
    trained = train_folder(
        args.folder,
        strategy=strategy,
        image_size=args.image_size,
        warm_up_epochs=args.warm_up_epochs,
        fine_tune_epochs=args.fine_tune_epochs,
        lr=args.lr,
        patience=args.patience,
        class_weighted=args.class_weighted,
    )
    print(f"saved {save_model(trained, args.out)}")
    if args.export:
        print(f"exported {export_model(trained, args.export)}")


def _predict(args: argparse.Namespace) -> None:
    from .project import predict_images

    rows = predict_images(args.model, args.path, top_k=args.top_k)
    for row in rows:
        top = ", ".join(
            f"{c} {p:.3f}" for c, p in zip(row.classes, row.probabilities, strict=True)
        )
        print(f"{row.file}\t{top}")
    if args.csv:
        k = len(rows[0].classes) if rows else 0
        header = ["file"] + [f"{w}{i + 1}" for i in range(k) for w in ("class", "p")]
        buffer = io.StringIO()
        csv.writer(buffer).writerow(header)
        for r in rows:
            pairs = zip(r.classes, r.probabilities, strict=True)
            csv.writer(buffer).writerow([r.file, *(v for pair in pairs for v in pair)])
        _write_text(args.csv, buffer.getvalue())


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tlutils diagnose | train | predict`` (chapter 5); errors print one line, exit 1."""
    args = _parser().parse_args(argv)
    commands = {"diagnose": _diagnose, "train": _train, "predict": _predict}
    try:
        commands[args.command](args)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"tlutils {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
