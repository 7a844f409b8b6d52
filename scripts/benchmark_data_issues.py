"""Measure the label, duplicate and calibration checks on real photos (chapter 5).

Every measurement copies photos of the course's mirror into a temporary folder (the
mirror is only read) and extracts Lite0's stage features at 160 px, as ``diagnose``
does, with an empty feature cache. Three parts, each on its own, disjoint images:

* ``threshold``: how similar distinct photos are and how similar planted copies
  (re-encoded, shrunk, enlarged, mirrored, cropped) are to their originals, in the
  features of :func:`tlutils.data_issues.similarity_features`: the measurement behind
  :data:`tlutils.data_issues.DUPLICATE_THRESHOLD` (flowers, 150 per class; hymenoptera's
  val images; EuroSAT, 60 per class, to show where it fails).
* ``issues``: a class folder (flowers: 60 per class, 5 classes; hymenoptera: 60 per
  class from its train part) split 48/12 into train/val, with planted mislabels (12
  images moved to another class folder) and 15 duplicates (identical, re-encoded,
  shrunk and enlarged copies within a class, across classes and across train/val),
  checked by :func:`tlutils.data_issues.find_data_issues` as ``diagnose`` calls it:
  planted problems found, false alarms; three plantings per folder.
* ``temperature``: Lite0 with the linear probe of its final stage as head (fitted on
  training photos), a temperature fitted on one part of held-out photos, and the ECE
  and log-likelihood before and after on *other* held-out photos, the log-likelihood
  per image compared by the verdict rule (:func:`tlutils.verdict.compare`).

    TLUTILS_DATA_MIRROR=/path/to/shared/data python scripts/benchmark_data_issues.py all
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

SIZE = 160  # the image size diagnose and train use by default
SEED = 0


def pool(folder: Path, seed: int = SEED) -> dict[str, list[Path]]:
    """Each class's files of a mirror folder, in one seeded random order."""
    rng = random.Random(seed)
    out = {}
    for name in sorted(d.name for d in folder.iterdir() if d.is_dir()):
        files = sorted(p for p in (folder / name).iterdir() if p.is_file())
        rng.shuffle(files)
        out[name] = files
    return out


def copy_as(src: Path, dst: Path, kind: str) -> Path:
    """A copy of ``src`` at ``dst``: identical bytes, or re-encoded, resized, mirrored
    or cropped."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if kind == "identical":
        return Path(shutil.copy(src, dst))
    image = Image.open(src).convert("RGB")
    w, h = image.size
    changed = {
        "jpeg q60": lambda: image,
        "shrunk 3/4": lambda: image.resize((w * 3 // 4, h * 3 // 4), Image.BICUBIC),
        "enlarged 3/2": lambda: image.resize((w * 3 // 2, h * 3 // 2), Image.BICUBIC),
        "shrunk 1/2": lambda: image.resize((w // 2, h // 2), Image.BICUBIC),
        "mirrored": lambda: image.transpose(Image.FLIP_LEFT_RIGHT),
        "cropped 90%": lambda: image.crop((w // 20, h // 20, w - w // 20, h - h // 20)),
    }[kind]()
    changed.save(dst.with_suffix(".jpg"), quality=60 if kind == "jpeg q60" else 90)
    return dst.with_suffix(".jpg")


def features_of(folder: Path, model, split: bool):
    """Stage features, labels and files of each part of a class folder."""
    import tlutils as tl
    from tlutils.data_issues import dataset_files
    from tlutils.features import stage_features

    tf = tl.create_transform(tl.data_config(model), image_size=SIZE)
    if split:
        data = tl.load_image_folder(folder, tf, tf)
        parts = {"train": data.train, "val": data.val}
    else:
        parts = {"all": tl.ImageFolder(folder, tf)}
    feats, labels, files = {}, {}, {}
    for part, dataset in parts.items():
        feats[part], y = stage_features(model, dataset, cache=False, progress=False)
        labels[part], files[part] = y.numpy(), dataset_files(dataset)
    return feats, labels, files, tl.classes_of(next(iter(parts.values())))


# --- the similarity threshold ------------------------------------------------------

COPY_KINDS = [
    "jpeg q60",
    "shrunk 3/4",
    "enlarged 3/2",
    "shrunk 1/2",
    "mirrored",
    "cropped 90%",
]
THRESHOLDS = [0.88, 0.90, 0.92, 0.94]
PER_KIND = 20  # planted copies of each kind


def threshold(tmp: Path, model) -> None:
    """Nearest distinct neighbours against planted copies, per dataset and threshold."""
    import tlutils as tl
    from tlutils.data_issues import DUPLICATE_THRESHOLD, similarity_features

    mirror = tl.dataset_dir("flowers").parent
    sources = {
        "flowers": {c: f[:150] for c, f in pool(mirror / "flowers").items()},
        "hymenoptera": pool(mirror / "hymenoptera" / "val"),
        "eurosat": {c: f[:60] for c, f in pool(mirror / "eurosat").items()},
    }
    print("\n## Similarity of distinct photos and of planted copies (threshold)")
    print("distinct: photos whose most similar other photo reaches the threshold;")
    print(f"copies found, of {PER_KIND} per kind: " + ", ".join(COPY_KINDS))
    for name, classes in sources.items():
        folder = tmp / f"threshold_{name}"
        originals = []
        for c, files in classes.items():
            (folder / c).mkdir(parents=True)
            originals += [Path(shutil.copy(f, folder / c / f.name)) for f in files]
        copies = []
        rng = random.Random(1)
        for i, src in enumerate(rng.sample(originals, PER_KIND * len(COPY_KINDS))):
            kind = COPY_KINDS[i % len(COPY_KINDS)]
            copies.append(
                (src, copy_as(src, folder / "zz_copies" / f"{i}.jpg", kind), kind)
            )
        feats, _, files, _ = features_of(folder, model, split=False)
        index = {f: i for i, f in enumerate(files["all"])}
        z = similarity_features(feats["all"])
        own = [index[str(f)] for f in originals]
        sims = z[own] @ z[own].T
        sims.fill_diagonal_(-1)
        digests = [hashlib.sha256(p.read_bytes()).digest() for p in originals]
        same = torch.tensor([[a == b for b in digests] for a in digests])
        sims[same & ~torch.eye(len(own), dtype=torch.bool)] = -1  # the mirror's own
        nearest = sims.max(1).values
        copy_sims = {k: [] for k in COPY_KINDS}
        for src, dst, kind in copies:
            copy_sims[kind].append(float(z[index[str(src)]] @ z[index[str(dst)]]))
        print(f"\n{name}: {len(own)} photos, {len(copies)} copies")
        print("threshold  distinct  " + "  ".join(f"{k:>12}" for k in COPY_KINDS))
        for t in THRESHOLDS:
            found = [sum(s >= t for s in copy_sims[k]) for k in COPY_KINDS]
            print(
                f"{t:9.2f}  {int((nearest >= t).sum()):8d}  "
                + "  ".join(f"{n:>9d}/{PER_KIND}" for n in found)
            )
        close = torch.nonzero(torch.triu(sims >= DUPLICATE_THRESHOLD)).tolist()
        print(f"distinct photos at or above {DUPLICATE_THRESHOLD} (look at them):")
        for a, b in close[:5]:
            print(f"  {float(sims[a, b]):.3f} {originals[a].name} {originals[b].name}")
        if len(close) > 5:
            print(f"  ... and {len(close) - 5} more pairs")


# --- planted label errors and duplicates -------------------------------------------

PLANTED_COPIES = [  # (problem, kind, how many) in each planting
    ("within a class", "identical", 2),
    ("within a class", "jpeg q60", 2),
    ("within a class", "shrunk 3/4", 2),
    ("within a class", "enlarged 3/2", 2),
    ("across classes", "jpeg q60", 3),
    ("across train and val", "identical", 2),
    ("across train and val", "enlarged 3/2", 2),
]


COPIES = sum(n for *_, n in PLANTED_COPIES)


def planted_folder(root: Path, classes: dict[str, list[Path]], rng: random.Random):
    """60 photos per class split 48/12, 12 mislabels (10 in train, 2 in val) and the
    copies of :data:`PLANTED_COPIES`; returns what was planted."""
    names = sorted(classes)
    for c in names:
        for part in ("train", "val"):
            (root / part / c).mkdir(parents=True)
        for i, f in enumerate(classes[c][:60]):
            part = "val" if i % 5 == 4 else "train"
            shutil.copy(f, root / part / c / f.name)
    moved: dict[str, str] = {}  # new path -> true class
    for k in range(12):
        part = "val" if k >= 10 else "train"
        c = names[k % len(names)]
        other = rng.choice([n for n in names if n != c])
        src = rng.choice(sorted((root / part / c).iterdir()))
        moved[str(shutil.move(src, root / part / other / src.name))] = c
    used = set(moved)
    pairs = []  # (problem, kind, original, copy)
    for problem, kind, n in PLANTED_COPIES:
        for _ in range(n):
            c = rng.choice(names)
            free = [
                f for f in sorted((root / "train" / c).iterdir()) if str(f) not in used
            ]
            src = rng.choice(free)
            used.add(str(src))
            target = {
                "within a class": root / "train" / c,
                "across classes": root
                / "train"
                / rng.choice([x for x in names if x != c]),
                "across train and val": root / "val" / c,
            }[problem]
            dst = copy_as(src, target / f"copy{len(pairs)}_{src.stem}.jpg", kind)
            used.add(str(dst))  # a copy is never the source of another copy
            pairs.append((problem, kind, str(src), str(dst)))
    return moved, pairs


PLANTINGS = (2, 3, 4)
"""Seeds of the plantings: each plants its own mislabels and copies."""


def check_planted(root: Path, classes, seed: int, model) -> dict:
    """Plant problems in a copy of ``classes``, check it as ``diagnose`` would, and
    count what was found."""
    from tlutils.data_issues import find_data_issues
    from tlutils.probe import choose_stage

    moved, pairs = planted_folder(root, classes, random.Random(seed))
    feats, labels, files, names = features_of(root, model, split=True)
    choice = choose_stage(feats["train"], labels["train"], seed=SEED)  # diagnose's
    last = max(feats["train"])  # labels are judged by the final stage's probe
    found = find_data_issues(
        feats, labels, files, names, stage=last, C=choice.Cs[last], seed=SEED
    )
    suspects = {s.file: s for s in found.label_issues}
    cross = [p for p in pairs if p[0] == "across classes"]
    cross_files = {f for p in cross for f in p[2:]}
    planted_files = {f for p in pairs for f in p[2:]}
    groups = found.duplicates
    held = [
        next((g for g in groups if {p[2], p[3]} <= set(g.files)), None) for p in pairs
    ]
    return {
        "images": found.images,
        "moved": len(moved),
        "found": sum(f in suspects for f in moved),
        "right": sum(
            f in suspects and suspects[f].suggested == c for f, c in moved.items()
        ),
        "first": sum(s.file in moved for s in found.label_issues[: len(moved)]),
        "cross": len(cross),
        "cross_flagged": sum(p[3] in suspects for p in cross),
        "other": [
            suspects[f] for f in suspects if f not in moved and f not in cross_files
        ],
        "pairs": [
            (p[0], p[1], g is not None, g is not None and p[0] in g.problems)
            for p, g in zip(pairs, held, strict=True)
        ],
        "extra": [g for g in groups if not set(g.files) & planted_files],
    }


def issues(tmp: Path, model) -> None:
    """Planted mislabels and duplicates in two real folders: found and false alarms."""
    import tlutils as tl
    from tlutils.data_issues import DUPLICATE_THRESHOLD

    mirror = tl.dataset_dir("flowers").parent
    folders = {
        "flowers": {c: f[150:210] for c, f in pool(mirror / "flowers").items()},
        "hymenoptera": {
            c: f[:60] for c, f in pool(mirror / "hymenoptera" / "train").items()
        },
    }
    print("\n## Planted label errors and duplicates (issues)")
    print(
        f"each planting: 60 photos per class, 12 moved to another class, {COPIES} "
        f"copies; labels judged by the final stage's probe, duplicates at cosine >= "
        f"{DUPLICATE_THRESHOLD}"
    )
    for name, classes in folders.items():
        start = time.perf_counter()
        runs = [
            check_planted(tmp / f"issues_{name}_{seed}", classes, seed, model)
            for seed in PLANTINGS
        ]
        print(f"\n{name} ({time.perf_counter() - start:.0f} s)")
        print("planting  images  mislabels found  true class  in first 12  "
              "wrong-class copies flagged  other suspects")  # fmt: skip
        for seed, r in zip(PLANTINGS, runs, strict=True):
            print(
                f"{seed:8d}  {r['images']:6d}  {r['found']:9d}/{r['moved']:<5d}  "
                f"{r['right']:10d}  {r['first']:11d}  "
                f"{r['cross_flagged']:20d}/{r['cross']:<5d}  {len(r['other']):14d}"
            )
        total = {
            k: sum(r[k] for r in runs) for k in ("found", "moved", "right", "first")
        }
        others = sum(len(r["other"]) for r in runs)
        print(
            f"{'all':>8}  {sum(r['images'] for r in runs):6d}  "
            f"{total['found']:9d}/{total['moved']:<5d}  {total['right']:10d}  "
            f"{total['first']:11d}  {sum(r['cross_flagged'] for r in runs):20d}/"
            f"{sum(r['cross'] for r in runs):<5d}  {others:14d}"
        )
        print("planted copy                          found  problem named")
        for problem, kind, _ in PLANTED_COPIES:
            mine = [p for r in runs for p in r["pairs"] if p[:2] == (problem, kind)]
            print(
                f"{problem + ', ' + kind:36}  {sum(p[2] for p in mine):2d}/"
                f"{len(mine):<2d}   {sum(p[3] for p in mine):2d}/{len(mine)}"
            )
        extra = [g for r in runs for g in r["extra"]]
        print(f"duplicate groups without a planted copy (false alarms): {len(extra)}")
        for g in extra[:5]:
            print(f"  {g.kind}: {', '.join(Path(f).name for f in g.files)}")
        for s in [s for r in runs for s in r["other"]][:6]:
            print(f"  other suspect: {Path(s.file).name}: {s.reason}")


# --- temperature scaling -------------------------------------------------------------


def log_likelihood(evaluation) -> np.ndarray:
    """Each image's log-probability of its true class at the evaluation's
    temperature."""
    p = evaluation.probabilities()
    return np.log(np.clip(p[np.arange(len(p)), evaluation.true], 1e-12, 1))


def temperature(tmp: Path, model) -> None:
    """Fit T on held-out photos; ECE and log-likelihood before/after on other ones."""
    import tlutils as tl
    from tlutils.checkpoint import trained_model
    from tlutils.features import stage_features
    from tlutils.probe import fit_probe, probe_as_linear
    from tlutils.verdict import compare

    mirror = tl.dataset_dir("flowers").parent
    flowers = pool(mirror / "flowers")
    hymen_val = pool(mirror / "hymenoptera" / "val", seed=3)
    setups = {
        "flowers": {
            "train": {c: f[210:270] for c, f in flowers.items()},
            "calibration": {c: f[270:330] for c, f in flowers.items()},
            "test": {c: f[330:430] for c, f in flowers.items()},
        },
        "hymenoptera": {
            "train": pool(mirror / "hymenoptera" / "train"),
            "calibration": {c: f[: len(f) // 2] for c, f in hymen_val.items()},
            "test": {c: f[len(f) // 2 :] for c, f in hymen_val.items()},
        },
    }
    print("\n## Temperature scaling (temperature)")
    print(
        "folder        T     images  accuracy  ECE before  ECE after  "
        "NLL before  NLL after  log-likelihood after - before (95% interval, nats)"
    )
    tf = tl.create_transform(tl.data_config(model), image_size=SIZE)
    for name, parts in setups.items():
        folders = {}
        for part, classes in parts.items():
            folders[part] = tmp / f"temperature_{name}" / part
            for c, files in classes.items():
                (folders[part] / c).mkdir(parents=True)
                for f in files:
                    shutil.copy(f, folders[part] / c / f.name)
        train = tl.ImageFolder(folders["train"], tf)
        feats, y = stage_features(model, train, stages=[8], cache=False, progress=False)
        probe = fit_probe(feats[8], y)
        net = tl.replace_head(model, len(train.classes), head=probe_as_linear(probe))
        trained = trained_model(net, train.classes, tl.DEFAULT_MODEL, SIZE)
        fit_on = tl.evaluate_folder(trained, folders["calibration"])
        t = fit_on.fit_temperature()
        before = tl.evaluate_folder(trained, folders["test"], temperature=1.0)
        trained.temperature = t  # as `train` stores it; evaluate_folder reads it
        after = tl.evaluate_folder(trained, folders["test"])
        assert after.predicted == before.predicted  # T never changes the top class
        v = compare(log_likelihood(after), log_likelihood(before))
        print(
            f"{name:12} {t:5.2f}  {len(after.files):6d}  {after.accuracy:8.3f}  "
            f"{before.ece:10.3f}  {after.ece:9.3f}  "
            f"{-log_likelihood(before).mean():10.3f}  "
            f"{-log_likelihood(after).mean():9.3f}  {v.difference:+.3f} "
            f"({v.low:+.3f} to {v.high:+.3f}): {v.verdict}"
        )
        print(
            f"{'':12} (probe C {probe[-1].C:g}, fitted on {len(train)} training "
            "photos; "
            f"T fitted on {len(fit_on.files)} held-out photos, ECE there "
            f"{fit_on.ece:.3f} -> {fit_on.with_temperature(t).ece:.3f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "part", nargs="?", default="all",
        choices=["threshold", "issues", "temperature", "all"],
    )  # fmt: skip
    args = parser.parse_args()
    if not os.environ.get("TLUTILS_DATA_MIRROR"):
        raise SystemExit(
            "Set TLUTILS_DATA_MIRROR to the course's data mirror (the folder holding "
            "flowers/, hymenoptera/ and eurosat/)."
        )
    torch.manual_seed(SEED)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TLUTILS_CACHE"] = str(Path(tmp) / "cache")  # touch no real cache
        import tlutils as tl

        model = tl.create_model().eval()
        start = time.perf_counter()
        for part in ("threshold", "issues", "temperature"):
            if args.part in (part, "all"):
                globals()[part](Path(tmp), model)
        print(f"\n({time.perf_counter() - start:.0f} s on {os.cpu_count()} CPU cores)")


if __name__ == "__main__":
    main()
