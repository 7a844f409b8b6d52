import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import tlutils as tl  # noqa: E402


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
