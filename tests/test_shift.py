"""Tests for tlutils.shift (chapter 4): fixed corruptions and feature-distortion measures."""

import pytest
import torch

from tlutils import shift


def images(n: int = 4, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Random images in [0, 1]: smooth colour patches plus fine texture."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    smooth = torch.nn.functional.interpolate(low, size=size, mode="bilinear")
    texture = torch.rand(n, 3, size, size, generator=g)
    return (0.6 * smooth + 0.4 * texture).clamp(0, 1)


@pytest.mark.parametrize("name", list(shift.CORRUPTIONS))
def test_every_corruption_is_deterministic_in_range_and_grows_with_severity(name):
    x = images()
    distances = []
    for severity in range(1, 6):
        out = shift.corrupt(x, name, severity, seed=3)
        assert out.shape == x.shape and out.dtype == torch.float32
        assert out.min() >= 0 and out.max() <= 1
        assert torch.equal(out, shift.corrupt(x, name, severity, seed=3))
        distances.append((out - x).abs().mean().item())
    assert distances[0] > 1e-3, distances  # severity 1 already changes the images
    assert distances[-1] > distances[0], distances
    assert all(b >= a - 1e-3 for a, b in zip(distances, distances[1:])), distances


def test_noise_depends_on_seed_and_index_but_not_on_the_batch():
    x = images(3)
    a = shift.corrupt(x, "gaussian_noise", 3, seed=0)
    b = shift.corrupt(x, "gaussian_noise", 3, seed=1)
    assert not torch.equal(a, b)
    assert torch.equal(shift.corrupt(x[:2], "gaussian_noise", 3, seed=0), a[:2])
    # images 0 and 1 are the same picture: their noise still differs
    same = torch.stack([x[0], x[0]])
    twice = shift.corrupt(same, "gaussian_noise", 3)
    assert not torch.equal(twice[0], twice[1])
    # the other corruptions ignore the seed
    assert torch.equal(
        shift.corrupt(x, "jpeg", 2, seed=0), shift.corrupt(x, "jpeg", 2, seed=9)
    )


def test_saturation_5_is_grey_and_contrast_keeps_the_mean():
    x = images()
    grey = shift.corrupt(x, "saturation", 5)
    assert torch.allclose(grey[:, 0], grey[:, 1], atol=1e-5)
    assert torch.allclose(grey[:, 1], grey[:, 2], atol=1e-5)
    flat = shift.corrupt(x, "contrast", 5)
    assert torch.allclose(flat.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=1e-5)
    assert flat.std() < 0.2 * x.std()


def test_corrupt_refuses_bad_input():
    x = images()
    with pytest.raises(ValueError, match="Unknown corruption 'fog'.*gaussian_noise"):
        shift.corrupt(x, "fog", 1)
    with pytest.raises(ValueError, match="severity"):
        shift.corrupt(x, "jpeg", 6)
    with pytest.raises(ValueError, match="values in \\[0, 1\\].*before Normalize"):
        shift.corrupt(x * 2 - 1, "jpeg", 1)
    with pytest.raises(ValueError, match="float tensor"):
        shift.corrupt(x[0], "jpeg", 1)
    with pytest.raises(ValueError, match="float tensor"):
        shift.corrupt((x * 255).to(torch.uint8), "jpeg", 1)


def test_linear_cka():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 16, generator=g)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))
    assert shift.linear_cka(x, x) == pytest.approx(1.0)
    # invariant to rotations, isotropic scaling and shifts
    assert shift.linear_cka(x, 3 * x @ q + 5) == pytest.approx(1.0)
    unrelated = torch.randn(200, 16, generator=g)
    assert shift.linear_cka(x, unrelated) < 0.2
    partly = x + 1.0 * torch.randn(200, 16, generator=g)
    assert 0.3 < shift.linear_cka(x, partly) < 0.95
    # different widths are fine
    assert shift.linear_cka(x, x[:, :8]) > 0.3
    with pytest.raises(ValueError, match="same n images"):
        shift.linear_cka(x, x[:10])
    with pytest.raises(ValueError, match="constant"):
        shift.linear_cka(x, torch.ones(200, 4))


def test_mean_cosine_similarity():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 8, generator=g)
    assert shift.mean_cosine_similarity(x, x) == pytest.approx(1.0)
    assert shift.mean_cosine_similarity(x, 2 * x) == pytest.approx(1.0)
    assert shift.mean_cosine_similarity(x, -x) == pytest.approx(-1.0)
    assert abs(shift.mean_cosine_similarity(x, torch.randn(50, 8, generator=g))) < 0.2
    with pytest.raises(ValueError, match="same size"):
        shift.mean_cosine_similarity(x, x[:, :4])
    with pytest.raises(ValueError, match="at least 2"):
        shift.mean_cosine_similarity(x[:1], x[:1])
