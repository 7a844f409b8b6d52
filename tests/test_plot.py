import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import tlutils as tl  # noqa: E402
from tlutils.plot import OUTCOME_STYLE, plot_verdicts  # noqa: E402
from tlutils.verdict import OUTCOMES, Verdict, classify  # noqa: E402


def test_show_images_undoes_normalisation_and_titles():
    image = torch.zeros(3, 8, 8)  # normalised with mean = std = 0.5, this is mid-grey
    fig = tl.show_images(
        [image, np.ones((8, 8, 3))], ["a", "b"], colors=["green", "red"]
    )
    axes = [ax for ax in fig.axes if ax.images]
    assert (
        len(axes) == 2
        and axes[0].get_title() == "a"
        and axes[1].title.get_color() == "red"
    )
    assert np.allclose(axes[0].images[0].get_array(), 0.5)
    plt.close(fig)
    with pytest.raises(ValueError, match="No images"):
        tl.show_images([])


def test_plot_history_draws_every_run():
    h = tl.History(
        train_loss=[1, 0.5],
        train_acc=[0.5, 0.8],
        val_loss=[1.1, 0.7],
        val_acc=[0.4, 0.7],
        seconds=[1, 1],
    )
    fig = tl.plot_history({"a": h, "b": h})
    assert len(fig.axes[0].lines) == 4 and len(fig.axes[1].lines) == 4
    plt.close(fig)


def test_confusion_matrix_counts():
    fig = tl.plot_confusion_matrix([0, 0, 1, 1], [0, 1, 1, 1], ["ants", "bees"])
    texts = sorted(t.get_text() for t in fig.axes[0].texts)
    assert texts == ["0", "1", "1", "2"]
    plt.close(fig)


def _verdict(low: float, high: float, mean: float | None = None, margin=0.01):
    """A Verdict for [low, high] in points, its outcome by the rule."""
    low, high = low / 100, high / 100
    mean = (low + high) / 2 if mean is None else mean / 100
    outcome = classify(low, high, margin)
    return Verdict(mean, low, high, outcome, 3, 500, 2, 1, margin=margin)


# One comparison per outcome, in OUTCOMES' order (intervals in points).
SIX = [
    ("fine-tune", "probe", _verdict(1.2, 3.0, 2.1)),
    ("cut", "probe", _verdict(0.2, 0.8)),
    ("top 1", "probe", _verdict(-0.04, 0.3)),
    ("LP-FT", "FT", _verdict(-0.8, -0.2)),
    ("scratch", "fine-tune", _verdict(-31.0, -18.0, -24.0)),
    ("dropout", "linear", _verdict(-2.0, 7.0, 2.4)),
]


def _row_lines(ax, label):
    """The interval bar and the estimate marker drawn for the row ``label``."""
    lines = {line.get_gid(): line for line in ax.lines}
    return lines[f"interval: {label}"], lines[f"estimate: {label}"]


def test_forest_plot_draws_each_comparison_on_its_row_by_outcome():
    fig = plot_verdicts(SIX, title="ch3", primary=["LP-FT vs FT", ("cut", "probe")])
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == [  # primary first, each group in the order given
        "cut vs probe",
        "LP-FT vs FT",
        "fine-tune vs probe",
        "top 1 vs probe",
        "scratch vs fine-tune",
        "dropout vs linear",
    ]
    weights = [t.get_fontweight() for t in ax.get_yticklabels()]
    assert weights == ["bold"] * 2 + ["normal"] * 4
    ticks = dict(zip(labels, ax.get_yticks(), strict=True))
    shapes = set()
    for a, b, v in SIX:
        bar, dot = _row_lines(ax, f"{a} vs {b}")
        y = ticks[f"{a} vs {b}"]
        assert list(bar.get_xdata()) == pytest.approx([100 * v.low, 100 * v.high])
        assert list(bar.get_ydata()) == [y, y] and list(dot.get_ydata()) == [y]
        assert dot.get_xdata()[0] == pytest.approx(100 * v.difference)
        color, marker, filled = OUTCOME_STYLE[v.verdict]
        assert dot.get_marker() == marker and bar.get_color() == color
        assert (dot.get_markerfacecolor() == color) is filled
        primary = f"{a} vs {b}" in ("cut vs probe", "LP-FT vs FT")
        assert (dot.get_alpha() == 1.0) is primary  # exploratory rows are paler
        shapes.add((marker, filled))
    assert len(shapes) == len(OUTCOMES)  # the outcomes differ without their colours
    band = next(p for p in ax.patches if p.get_gid() == "margin band")
    assert (band.get_x(), band.get_width()) == pytest.approx((-1.0, 2.0))
    zero = next(line for line in ax.lines if line.get_gid() == "zero")
    assert list(zero.get_xdata()) == [0, 0]
    left, right = ax.get_xlim()
    assert left < -31 and right > 7 and "points" in ax.get_xlabel()
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    for outcome in OUTCOMES:
        assert sum(text.startswith(f"{outcome}:") for text in legend) == 1
    assert "±1 point: the margin" in legend and "bold: primary" in legend[-1]
    right_column = [t.get_text() for t in ax.child_axes[0].get_yticklabels()]
    assert right_column[0] == "+0.2 to +0.8  slightly better"
    assert right_column[-1] == "-2.0 to +7.0  inconclusive"
    assert ax.get_title(loc="left") == "ch3"
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    assert buffer.getvalue()[:4] == b"\x89PNG"
    plt.close(fig)


def test_forest_plot_without_primary_and_at_thirty_rows():
    rows = [(f"arm {i}", "base", _verdict(i / 10 - 2, i / 10)) for i in range(30)]
    fig = plot_verdicts(rows)
    ax = fig.axes[0]
    assert len(ax.get_yticks()) == 30 and ax.get_ylim()[0] > ax.get_ylim()[1]
    assert {t.get_fontweight() for t in ax.get_yticklabels()} == {"bold"}
    assert not [t for t in fig.legends[0].get_texts() if "primary" in t.get_text()]
    assert not [line for line in ax.lines if line.get_linestyle() == "--"]
    small = plot_verdicts(rows[:6])
    assert fig.get_figheight() > 3 * small.get_figheight() / 2  # rows keep their room
    plt.close("all")


def test_forest_plot_refuses_what_it_cannot_draw_honestly():
    with pytest.raises(ValueError, match="No comparisons"):
        plot_verdicts([])
    with pytest.raises(ValueError, match="not rows"):
        plot_verdicts(SIX, primary=["cut vs the probe"])
    with pytest.raises(ValueError, match="one margin"):
        plot_verdicts(SIX, margin=0.02)
    wide = [("a", "b", _verdict(-1.0, 1.5, margin=0.02))]
    fig = plot_verdicts(wide)  # the band follows the verdicts' own margin
    band = next(p for p in fig.axes[0].patches if p.get_gid() == "margin band")
    assert band.get_x() == pytest.approx(-2.0)
    with pytest.raises(ValueError, match="one margin"):
        plot_verdicts(SIX + wide)
    plt.close("all")
