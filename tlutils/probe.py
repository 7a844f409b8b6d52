"""The linear probe, its penalty and the stage it reads: one definition (chapters 2, 3, 5).

The probe is a logistic regression on standardised frozen features (Kornblith et al. 2019;
Razavian et al. 2014 used linear SVMs). Everything that probes goes through this module:
chapter 2 (is a feature linearly separable?), chapter 3 (the cut probe and the stage
curve), the fine-tuning recipe (the probe is the warm head, :func:`probe_head`) and
``diagnose``/``train`` (the chosen stage and its probe).

* :func:`probe_pipeline`: the one model (scaler + logistic regression, one tolerance);
* :func:`choose_probe_C`: the one penalty choice (stratified cross-validation on the
  training features, ties to the stronger penalty);
* :func:`choose_stage`: the one stage choice, with the selection protocol as a parameter
  (out-of-fold on all training images, or a fit/held-out split of them); the validation
  images are never looked at;
* :func:`fit_probe`, :func:`probe_as_linear`, :func:`probe_head`,
  :func:`linear_probe_correct`, :func:`linear_probe_accuracy`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = [
    "PROBE_CS",
    "PROBE_TOL",
    "FOLDS",
    "probe_pipeline",
    "choose_probe_C",
    "fit_probe",
    "probe_as_linear",
    "probe_head",
    "linear_probe_correct",
    "linear_probe_accuracy",
    "StageChoice",
    "choose_stage",
]

PROBE_CS = (0.01, 0.1, 1.0, 10.0)
"""The L2 penalties a probe chooses from (inverse strength ``C`` of scikit-learn), on the
training features only (as Kornblith et al. 2019 do): 16- and 1280-dimensional features need
different regularisation, so a fixed C would measure the penalty, not the features."""
PROBE_TOL = 1e-3
"""The solver's tolerance. scikit-learn's default (1e-4) moved the stage accuracies of 300
flower photos by an image or two and ran the cross-validated fits four times slower; every
probe of the course uses this one value (chapters 2, 3 and 5 once used two)."""
FOLDS = 3
"""Folds of the cross-validation that chooses ``C`` and, out of fold, the stage."""


def probe_pipeline(C: float):
    """The probe with penalty ``C``: standardised features, then a logistic regression
    (chapter 2). Unfitted; :func:`fit_probe` fits it."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(), LogisticRegression(C=C, tol=PROBE_TOL, max_iter=2000)
    )


def _as_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return x.reshape(len(x), -1) if x.ndim > 1 else x


def _one_blas_thread():
    """Logistic regression on a few thousand rows runs faster on one BLAS thread: with the
    default threads one fit took 2.07 s of CPU against 0.11 s on one thread (2-core CPU)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


def _folds(y: np.ndarray, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds of the training labels (up to :data:`FOLDS`; empty if a class has
    fewer than two images)."""
    from sklearn.model_selection import StratifiedKFold

    smallest = int(np.bincount(y).min()) if len(y) else 0
    if smallest < 2:
        return []
    split = StratifiedKFold(min(FOLDS, smallest), shuffle=True, random_state=seed)
    return list(split.split(np.zeros(len(y)), y))


def _out_of_fold(x, y, C, folds) -> np.ndarray:
    """Which training images the probe with penalty ``C`` gets right out of fold."""
    right = np.zeros(len(y), dtype=bool)
    with _one_blas_thread():
        for inner, held in folds:
            probe = probe_pipeline(C).fit(x[inner], y[inner])
            right[held] = probe.predict(x[held]) == y[held]
    return right


def _best_C(x, y, Cs, folds) -> tuple[float, np.ndarray]:
    """The penalty whose probe gets most training images right out of fold (ties: the
    smaller C, the stronger penalty), and those images."""
    best = None
    for C in Cs:
        right = _out_of_fold(x, y, C, folds)
        if best is None or right.sum() > best[1].sum():
            best = (float(C), right)
    return best


def choose_probe_C(
    features: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    Cs: Sequence[float] = PROBE_CS,
    seed: int = 0,
) -> float:
    """The probe's penalty ``C``, chosen by stratified cross-validation on the training
    features alone (chapter 2). Ties go to the smaller C (the stronger penalty); a class
    with a single image leaves nothing to cross-validate: then C = 1."""
    x, y = _as_numpy(features), _as_numpy(labels).astype(int)
    folds = _folds(y, seed)
    if len(Cs) == 1 or not folds:
        return float(Cs[0] if len(Cs) == 1 else 1.0)
    return _best_C(x, y, Cs, folds)[0]


def fit_probe(
    features: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    C: float | None = None,
    seed: int = 0,
):
    """The linear probe fitted on training features (chapter 2), its penalty ``C`` given
    or (``None``) chosen on these features by :func:`choose_probe_C`. Returns the fitted
    scikit-learn pipeline; its ``C`` is in ``probe[-1].C``."""
    x, y = _as_numpy(features), _as_numpy(labels)
    if len(x) != len(y):
        raise ValueError(
            f"Features and labels must have the same length; got {len(x)} and {len(y)}."
        )
    if C is None:
        C = choose_probe_C(x, y, seed=seed)
    with _one_blas_thread():
        return probe_pipeline(C).fit(x, y)


def probe_as_linear(probe) -> nn.Linear:
    """A fitted probe (:func:`fit_probe`) as one ``nn.Linear`` with the same predictions:
    the standardisation folded into the weights (chapters 3 and 5)."""
    scaler, clf = probe[0], probe[-1]
    weight, bias = clf.coef_, clf.intercept_
    if weight.shape[0] == 1:  # two classes: scikit-learn keeps one row
        weight, bias = np.vstack([-weight, weight]) / 2, np.r_[-bias, bias] / 2
    weight = weight / scaler.scale_
    bias = bias - weight @ scaler.mean_
    head = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        head.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    return head


def probe_head(
    features: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    C: float | None = None,
) -> nn.Linear:
    """The linear probe as a PyTorch layer: the warm head of the recipe (chapters 3-5).

    A fine-tune that starts from it starts from the probe (linear probing, then
    fine-tuning, Kumar et al. 2022); its predictions are the probe's."""
    return probe_as_linear(fit_probe(np.asarray(features, dtype=np.float64), labels, C))


def linear_probe_correct(
    train_features: torch.Tensor | np.ndarray,
    train_labels: torch.Tensor | np.ndarray,
    val_features: torch.Tensor | np.ndarray,
    val_labels: torch.Tensor | np.ndarray,
    C: float | None = None,
) -> np.ndarray:
    """Which validation images the linear probe gets right (chapters 2-4): a boolean array
    in the validation set's order, what the verdict rule (:mod:`tlutils.verdict`) pairs."""
    xva, yva = _as_numpy(val_features), _as_numpy(val_labels)
    if len(xva) != len(yva):
        raise ValueError(
            f"Features and labels must have the same length; got {len(xva)} and "
            f"{len(yva)}."
        )
    probe = fit_probe(train_features, train_labels, C)
    return probe.predict(xva) == yva


def linear_probe_accuracy(
    train_features: torch.Tensor | np.ndarray,
    train_labels: torch.Tensor | np.ndarray,
    val_features: torch.Tensor | np.ndarray,
    val_labels: torch.Tensor | np.ndarray,
    C: float | None = None,
) -> float:
    """Validation accuracy of the linear probe on fixed features (chapters 2-4): how
    linearly separable the features are, the penalty chosen on the training features."""
    return float(
        linear_probe_correct(
            train_features, train_labels, val_features, val_labels, C
        ).mean()
    )


@dataclass(frozen=True)
class StageChoice:
    """What :func:`choose_stage` measured (chapters 3 and 5).

    ``stage`` is the chosen stage; ``scores[s]`` the accuracy of stage ``s``'s probe on
    the images it was scored on and ``correct[s]`` which of them it got right (out of
    fold on every training image, or on the held-out rows); ``Cs[s]`` each stage's
    penalty; ``protocol`` says which.
    """

    stage: int
    scores: dict[int, float]
    correct: dict[int, np.ndarray]
    Cs: dict[int, float]
    protocol: str

    def curve(self) -> list[float]:
        """The scores in stage order: the stage curve of chapters 3 and 5."""
        return [self.scores[s] for s in sorted(self.scores)]


def choose_stage(
    features: Mapping[int, torch.Tensor | np.ndarray] | Sequence,
    labels: torch.Tensor | np.ndarray,
    held_out: tuple[np.ndarray, np.ndarray] | None = None,
    stages: Sequence[int] | None = None,
    seed: int = 0,
) -> StageChoice:
    """The stage whose linear probe scores best on *training* images (chapters 3 and 5).

    ``features[s]`` are the pooled features of stage ``s`` for the training images. Two
    protocols, one rule: with ``held_out=None`` every image is scored out of fold
    (stratified 3-fold cross-validation, the folds shared by all stages and each stage's
    ``C`` the one that scores best out of fold: ``diagnose``); with ``held_out=(fit,
    held)`` each stage's probe is fitted on rows ``fit`` (``C`` chosen on them) and
    scored on rows ``held`` (chapter 3's selection split). The validation images are
    never seen, so they can report the chosen stage's accuracy without bias. Ties go to
    the deeper stage.
    """
    y = _as_numpy(labels).astype(int)
    if stages is None:
        stages = (
            list(features.keys())
            if isinstance(features, Mapping)
            else range(len(features))
        )
    stages = sorted(int(s) for s in stages)
    correct, Cs = {}, {}
    if held_out is None:
        folds = _folds(y, seed)
        if not folds:
            raise ValueError(
                "Every class needs at least 2 training images to choose a stage; add "
                "images to the smallest class."
            )
        for s in stages:
            Cs[s], correct[s] = _best_C(_as_numpy(features[s]), y, PROBE_CS, folds)
    else:
        fit, held = (np.asarray(rows) for rows in held_out)
        for s in stages:
            x = _as_numpy(features[s])
            Cs[s] = choose_probe_C(x[fit], y[fit], seed=seed)
            probe = fit_probe(x[fit], y[fit], C=Cs[s])
            correct[s] = probe.predict(x[held]) == y[held]
    scores = {s: float(correct[s].mean()) for s in stages}
    best = max(stages, key=lambda s: (correct[s].sum(), s))  # ties: the deeper stage
    protocol = "out of fold" if held_out is None else "held-out training rows"
    return StageChoice(best, scores, correct, Cs, protocol)
