"""scripts/benchmark_train.py's folder, end to end (chapter 5): on 1,797 real digit scans at
64 px, ten classes, `tlutils train` with its defaults saves a model that the verdict rule
finds at least as good as the diagnosis's probe, and the saved file is the model judged."""

import numpy as np
import pytest
from helpers import load_script

import tlutils as tl
from tlutils.cli import main as tlutils

pytestmark = pytest.mark.slow  # the quick loop leaves it out

benchmark_train = load_script("scripts/benchmark_train.py")


def test_default_train_keeps_the_diagnosis_promise_on_the_digits(tmp_path, tmp_cache):
    folder = benchmark_train.digits_folder(tmp_path / "digits")
    assert sum(1 for p in folder.rglob("*.png")) == 1797
    assert sorted(p.name for p in folder.iterdir()) == [str(d) for d in range(10)]
    found = tl.diagnose(folder, image_size=64, progress=False)
    out = tmp_path / "model.pt"
    assert tlutils(["train", str(folder), "--image-size", "64", "--out", str(out),
                    "--quiet"]) == 0  # fmt: skip
    trained = tl.load_model(out)
    h = trained.history
    assert h["strategy"] == found.train_strategy
    assert h["probe_stage"] == found.best_stage
    assert np.mean(h["probe_val_correct"]) == found.val_accuracy
    assert trained.against_probe().not_worse  # the promise, by the verdict rule
    # The file holds the model that was judged: its predictions on the validation
    # images are the ones the verdict read.
    data = tl.load_image_folder(folder, trained.transform(), trained.transform())
    logits, targets = tl.predict(
        trained.model, tl.create_loader(data.val, batch_size=64), device="cpu"
    )
    assert (logits.argmax(1) == targets).int().tolist() == h["val_correct"]
