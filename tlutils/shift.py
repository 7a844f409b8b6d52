"""Distribution shift without a download: fixed image corruptions, and how far features moved (chapter 4).

:func:`corrupt` applies one of five corruptions in the spirit of ImageNet-C (Hendrycks and
Dietterich 2019) at a severity from 1 to 5 to a batch of images with values in [0, 1]: the
same images, seed and severity always give the same result (the noise of image ``i`` comes
from its own generator, seeded by ``seed`` and ``i``), so the corrupted images' features can
be computed once and cached like the clean ones. :func:`linear_cka` and
:func:`mean_cosine_similarity` compare two sets of features of the same images, e.g. of a
pretrained and a fine-tuned body: 1 means unchanged, lower means the features were distorted.
"""

from __future__ import annotations

import math

import torch
from torchvision.io import decode_jpeg, encode_jpeg
from torchvision.transforms.v2 import functional as TF

__all__ = ["CORRUPTIONS", "corrupt", "linear_cka", "mean_cosine_similarity"]

#: The corruptions :func:`corrupt` knows, with their settings at severities 1-5.
CORRUPTIONS: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.12, 0.16),  # standard deviation of the noise
    "gaussian_blur": (0.75, 1.0, 1.5, 2.0, 3.0),  # sigma in pixels
    "jpeg": (30, 20, 12, 8, 5),  # JPEG quality
    "contrast": (0.6, 0.45, 0.3, 0.2, 0.1),  # factor towards the image's mean
    "saturation": (0.6, 0.4, 0.2, 0.1, 0.0),  # 0: grey
}


def _noise(images: torch.Tensor, std: float, seed: int) -> torch.Tensor:
    out = torch.empty_like(images)
    for i, image in enumerate(images):  # one generator per image: batch-independent
        g = torch.Generator().manual_seed(seed * 1_000_003 + i)
        out[i] = image + std * torch.randn(image.shape, generator=g)
    return out


def _blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    size = 2 * math.ceil(3 * sigma) + 1
    return TF.gaussian_blur(images, [size, size], [sigma, sigma])


def _jpeg(images: torch.Tensor, quality: float) -> torch.Tensor:
    as_bytes = (images * 255).round().to(torch.uint8)
    decoded = [decode_jpeg(encode_jpeg(x, quality=int(quality))) for x in as_bytes]
    return torch.stack(decoded).float() / 255


def _contrast(images: torch.Tensor, factor: float) -> torch.Tensor:
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return mean + factor * (images - mean)


def corrupt(
    images: torch.Tensor, name: str, severity: int, seed: int = 0
) -> torch.Tensor:
    """The images under corruption ``name`` at ``severity`` 1-5, values in [0, 1] (chapter 4).

    ``images`` is a float tensor ``(N, 3, H, W)`` with values in [0, 1] (before
    normalisation). The result is deterministic: the same images, ``seed`` and severity
    give the same tensor; only ``"gaussian_noise"`` uses the seed. Names:
    :data:`CORRUPTIONS`.
    """
    if name not in CORRUPTIONS:
        raise ValueError(
            f"Unknown corruption {name!r}; choose one of {', '.join(CORRUPTIONS)}."
        )
    if severity not in range(1, 6):
        raise ValueError(f"severity must be 1, 2, 3, 4 or 5; got {severity!r}.")
    if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(
            "images must be a float tensor (N, 3, H, W); got "
            f"{images.dtype} {tuple(images.shape)}. Stack the images of a dataset "
            "whose transform ends with ToTensor (no Normalize)."
        )
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError(
            "images must have values in [0, 1]: corrupt before Normalize, then "
            "normalise the result."
        )
    setting = CORRUPTIONS[name][severity - 1]
    images = images.detach().cpu().float()
    if name == "gaussian_noise":
        out = _noise(images, setting, seed)
    elif name == "gaussian_blur":
        out = _blur(images, setting)
    elif name == "jpeg":
        out = _jpeg(images, setting)
    elif name == "contrast":
        out = _contrast(images, setting)
    else:
        out = TF.adjust_saturation(images, setting)
    return out.clamp(0, 1)


def _features_pair(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(
            "Expected two feature matrices (n, d1) and (n, d2) of the same n images; "
            f"got {tuple(x.shape)} and {tuple(y.shape)}."
        )
    if len(x) < 2:
        raise ValueError("Need features of at least 2 images to compare.")
    return x.detach().double().cpu(), y.detach().double().cpu()


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear centred kernel alignment of two feature sets of the same images (chapter 4).

    ``x`` (n, d1) and ``y`` (n, d2) are features of the same n images in the same order.
    1 means the same features up to a rotation and a scale (Kornblith et al. 2019); lower
    means the fine-tuned body represents the images differently from the pretrained one.
    """
    x, y = _features_pair(x, y)
    x, y = x - x.mean(0), y - y.mean(0)
    cross = (y.T @ x).square().sum()
    norm = (x.T @ x).square().sum().sqrt() * (y.T @ y).square().sum().sqrt()
    if norm == 0:
        raise ValueError("One of the feature sets is constant: CKA is undefined.")
    return float(cross / norm)


def mean_cosine_similarity(x: torch.Tensor, y: torch.Tensor) -> float:
    """The mean over images of the cosine between their two feature vectors (chapter 4).

    ``x`` and ``y`` are (n, d) features of the same images from two versions of a body
    (pretrained and fine-tuned): 1 means every image's features point the same way.
    """
    x, y = _features_pair(x, y)
    if x.shape != y.shape:
        raise ValueError(
            f"Cosine similarity needs features of the same size; got {tuple(x.shape)} "
            f"and {tuple(y.shape)}."
        )
    return float(torch.nn.functional.cosine_similarity(x, y, dim=1).mean())
