"""The ``tlutils`` command: diagnose, train, evaluate, predict, and one clear line per error
(chapter 5)."""

import csv
import subprocess
import sys

import pytest
import torch
from helpers import photo_folder

import tlutils as tl
from tlutils import cli
from tlutils.cli import main


@pytest.fixture(scope="module")
def trained_path(tmp_path_factory):
    """`tlutils train` on a pre-split folder of real photo crops (the probe, then the
    recipe for one epoch at a given rate, batches of 8 images, 64 px)."""
    root = tmp_path_factory.mktemp("cli")
    folder = root / "photos"
    photo_folder(folder / "train", n=8)
    photo_folder(folder / "val", n=3, seed=1)
    out = root / "model.pt"
    args = ["train", str(folder), "--out", str(out), "--image-size", "64"]
    args += ["--strategy", "fine_tune", "--epochs", "1", "--lr", "1e-4"]
    args += ["--batch-size", "8", "--class-weighted", "--quiet", "--seed", "1"]
    args += ["--export", str(root / "model.pt2")]
    assert main(args) == 0
    return out


def test_train_writes_a_checkpoint_and_an_export(trained_path):
    loaded = tl.load_model(trained_path)
    assert loaded.classes == ["cats", "coffee", "rocket"]  # the real classes
    h = loaded.history
    # round 0 is the probe; then one epoch of fine-tuning, unless no trial on the
    # held-out training images beat its probe (then nothing more was trained)
    if h["fine_tune_skipped"]:
        assert len(h["train_loss"]) == 1 and h["phase_names"] == ["probe"]
    else:
        assert len(h["train_loss"]) == 2 and h["phase_starts"] == [0, 1]
        assert h["phase_names"] == ["probe", "fine-tune"]
        assert h["recipe"]["lr"] == 1e-4 and h["recipe"]["epochs"] == 1
    assert "recall" in h["report"]  # the per-class report
    assert "<- kept" in loaded.history["epochs_table"]
    verdict = loaded.against_probe()  # the saved model against the diagnosis's probe
    assert verdict.images == 9 and verdict.not_worse, verdict
    module, meta = tl.load_exported(trained_path.with_suffix(".pt2"))
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(module(x), loaded.model(x), atol=1e-5)


def test_predict_prints_a_table_and_writes_a_csv(trained_path, tmp_path, capsys):
    folder = photo_folder(tmp_path / "new", classes=("coffee",), n=2, seed=2)
    table = tmp_path / "out.csv"
    assert main(["predict", str(trained_path), str(folder), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all("\t" in line for line in lines)
    args = ["predict", str(trained_path), str(folder), "--csv", str(table)]
    assert main(args) == 0
    rows = list(csv.reader(table.open()))
    assert rows[0] == ["file", "class1", "p1", "class2", "p2", "class3", "p3"]
    assert len(rows) == 3


def test_predict_summarises_a_large_folder(trained_path, tmp_path, capsys, monkeypatch):
    folder = photo_folder(tmp_path / "new", classes=("coffee", "rocket"), n=2, seed=2)
    monkeypatch.setattr(cli, "SHOW_ALL_UP_TO", 3)  # 4 images count as a large folder
    assert main(["predict", str(trained_path), str(folder), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("4 images; top class:") and "--all" in out
    assert main(["predict", str(trained_path), str(folder), "--all", "--quiet"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 4


def test_evaluate_prints_scores_and_writes_a_plot_and_a_csv(
    trained_path, tmp_path, capsys
):
    folder = photo_folder(tmp_path / "labelled", n=3, seed=3)
    plots, table = tmp_path / "figures", tmp_path / "rows.csv"
    args = ["evaluate", str(trained_path), str(folder), "--plot", str(plots)]
    assert main([*args, "--csv", str(table), "--quiet", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("9 images; accuracy ") and "balanced accuracy" in out
    assert "precision" in out and "confusion matrix" in out
    assert "calibration error" in out.lower() or "ece" in out.lower()
    for name in ("confusion.png", "mistakes.png", "reliability.png"):
        assert (plots / name).read_bytes()[:4] == b"\x89PNG", name
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 9 and {r["true"] for r in rows} == {"cats", "coffee", "rocket"}
    assert all(r["correct"] == str(int(r["true"] == r["predicted"])) for r in rows)


def test_version_and_help_say_what_each_flag_does(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == (
        f"tlutils {tl.__version__}"
    )
    for command in ("diagnose", "train", "evaluate", "predict"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        for flag in ("--seed", "--device", "--batch-size", "--quiet"):
            assert flag in text, (command, flag)
        assert "(default: " in text
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "learning rate of fine-tuning" in text and "held-out training" in text
    assert "cut_probe" in text and "(default: auto)" in text


def test_train_still_takes_the_earlier_flag_name():
    from tlutils.cli import _parser

    argv = ["train", "photos", "--out", "m.pt"]
    assert _parser().parse_args([*argv, "--fine-tune-epochs", "1"]).epochs == 1
    assert _parser().parse_args(argv).epochs == 3


def test_diagnose_prints_and_writes_a_report(tmp_path, tmp_cache, capsys):
    folder = photo_folder(tmp_path / "photos", n=6)
    report, issues = tmp_path / "report.md", tmp_path / "issues"
    args = ["diagnose", str(folder), "--image-size", "64", "--report", str(report)]
    args += ["--issues", str(issues)]
    assert main([*args, "--quiet", "--device", "cpu", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "## Recommendation" in out and "## Labels and duplicates" in out
    assert report.read_text().startswith("# Diagnosis of")
    assert (issues / "issues.png").read_bytes()[:4] == b"\x89PNG"
    header = (issues / "issues.csv").read_text().splitlines()[0]
    assert header == "file,problem,class,suggested,probability,group,reason"


@pytest.mark.parametrize(
    "args, message",
    [
        (["diagnose", "{tmp}/nope"], "nope does not exist"),
        (["train", "{tmp}/nope", "--out", "{tmp}/m.pt"], "nope does not exist"),
        (["predict", "{tmp}/nope.pt", "{tmp}"], "nope.pt does not exist"),
        (["predict", "{model}", "{tmp}/missing.jpg"], "missing.jpg does not exist"),
        (["predict", "{tmp}/fake.pt", "{tmp}"], "not a tlutils checkpoint"),
        (["evaluate", "{model}", "{tmp}/nope"], "nope does not exist"),
        (["evaluate", "{model}", "{tmp}"], "named as the model's classes"),
    ],
)
def test_bad_input_gives_one_clear_line(args, message, trained_path, tmp_path, capsys):
    (tmp_path / "fake.pt").write_text("hello")
    args = [a.format(tmp=tmp_path, model=trained_path) for a in args]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_the_command_runs_in_a_subprocess(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tlutils.cli", "predict", str(tmp_path / "x.pt"), "."],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "x.pt does not exist" in result.stderr
    help_text = subprocess.run(
        [sys.executable, "-m", "tlutils.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "diagnose" in help_text and "predict" in help_text
