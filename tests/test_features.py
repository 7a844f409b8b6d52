import pytest
import timm
import torch
import torchvision
from torchvision import transforms
from torchvision.transforms import v2

import tlutils as tl


@pytest.fixture
def small_dataset(image_folder):
    return tl.ImageFolder(image_folder, transform=tl.create_transform(image_size=64))


def test_feature_extractor_returns_pooled_features(pretrained):
    backbone = tl.feature_extractor(pretrained)
    out = backbone(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 1280)
    assert tl.count_parameters(backbone)[0] == 0 and not backbone.training
    assert pretrained.get_classifier().out_features == 1000  # the original is untouched


def test_feature_extractor_for_torchvision_model():
    backbone = tl.feature_extractor(tl.create_model("resnet18", pretrained=False))
    assert backbone(torch.randn(1, 3, 64, 64)).shape == (1, 512)


def test_cached_features_equal_fresh_ones(pretrained, small_dataset, tmp_cache):
    backbone = tl.feature_extractor(pretrained)
    fresh, labels = tl.extract_features(
        backbone, small_dataset, cache=False, device="cpu", progress=False
    )
    first, _ = tl.extract_features(
        backbone, small_dataset, device="cpu", progress=False
    )
    files = list((tmp_cache / "features").glob("*.pt"))
    assert len(files) == 1
    again, labels_again = tl.extract_features(
        backbone, small_dataset, device="cpu", progress=False
    )
    assert torch.allclose(fresh, first, atol=1e-5) and torch.equal(first, again)
    assert torch.equal(labels, labels_again) and fresh.shape == (12, 1280)
    assert labels.tolist() == small_dataset.targets


def test_cache_key_changes_with_weights_files_and_transform(
    pretrained, small_dataset, image_folder
):
    backbone = tl.feature_extractor(pretrained)
    key = tl.features.feature_cache_key(backbone, small_dataset)
    other_transform = tl.ImageFolder(
        image_folder, transform=tl.create_transform(image_size=32)
    )
    assert tl.features.feature_cache_key(backbone, other_transform) != key
    subset = torch.utils.data.Subset(small_dataset, [0, 1, 2])
    assert tl.features.feature_cache_key(backbone, subset) != key
    changed = tl.feature_extractor(pretrained)
    with torch.no_grad():
        changed.conv_stem.weight[0, 0, 0, 0] += 1e-3
    assert tl.features.feature_cache_key(changed, small_dataset) != key
    (image_folder / "red" / "r0.png").write_bytes(
        (image_folder / "blue" / "b0.jpg").read_bytes()
    )
    assert tl.features.feature_cache_key(backbone, small_dataset) != key


def test_damaged_cache_file_is_recomputed(pretrained, small_dataset, tmp_cache):
    backbone = tl.feature_extractor(pretrained)
    features, _ = tl.extract_features(
        backbone, small_dataset, device="cpu", progress=False
    )
    (cache_file,) = (tmp_cache / "features").glob("*.pt")
    cache_file.write_bytes(b"truncated")
    again, _ = tl.extract_features(
        backbone, small_dataset, device="cpu", progress=False
    )
    assert torch.equal(features, again)


def test_random_transform_cannot_be_cached(pretrained, image_folder):
    augmented = tl.ImageFolder(
        image_folder, transform=tl.create_transform(train=True, image_size=32)
    )
    with pytest.raises(ValueError, match="RandomResizedCrop"):
        tl.extract_features(
            tl.feature_extractor(pretrained), augmented, device="cpu", progress=False
        )


def test_linear_head_on_cached_features_separates_colours(
    pretrained, small_dataset, tmp_cache
):
    features, labels = tl.extract_features(
        tl.feature_extractor(pretrained), small_dataset, device="cpu", progress=False
    )
    loader = torch.utils.data.DataLoader(
        tl.features_dataset(features, labels), batch_size=4, shuffle=True
    )
    tl.seed_everything(0)
    head = torch.nn.Linear(1280, 2)
    history = tl.fit(
        head, loader, loader, epochs=10, lr=1e-2, device="cpu", progress=False
    )
    assert history.val_acc[-1] == 1.0


class Jitter:
    """A custom augmentation whose name gives nothing away."""

    def __call__(self, x):
        return x + torch.rand(1)


class SneakyResize(transforms.Resize):
    """A subclass of a fixed step may add randomness: refused too."""


RANDOM_STEPS = {
    "ColorJitter": transforms.ColorJitter(0.4),
    "GaussianBlur": transforms.GaussianBlur(3),
    "RandAugment": transforms.RandAugment(),
    "TrivialAugmentWide": transforms.TrivialAugmentWide(),
    "AutoAugment": transforms.AutoAugment(),
    "AugMix": transforms.AugMix(),
    "Lambda": transforms.Lambda(lambda image: image),
    "Jitter": Jitter(),
    "SneakyResize": SneakyResize(64),
    "v2.ColorJitter": v2.ColorJitter(0.4),
    "v2.GaussianBlur": v2.GaussianBlur(3),
    "v2.RandAugment": v2.RandAugment(),
    "v2.TrivialAugmentWide": v2.TrivialAugmentWide(),
    "v2.AutoAugment": v2.AutoAugment(),
}


@pytest.mark.parametrize("name", RANDOM_STEPS)
def test_random_transforms_are_refused_for_caching(
    name, pretrained, image_folder, tmp_cache
):
    step = RANDOM_STEPS[name]
    pipeline = transforms.Compose([transforms.Resize(64), step, transforms.ToTensor()])
    if name.startswith("v2."):
        pipeline = v2.Compose(
            [v2.Resize(64), step, v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
        )
    dataset = tl.ImageFolder(image_folder, transform=pipeline)
    with pytest.raises(ValueError, match=type(step).__name__) as error:
        tl.extract_features(tl.feature_extractor(pretrained), dataset, progress=False)
    assert "cache=False" in str(error.value)
    assert not (tmp_cache / "features").exists()


def test_random_erasing_on_tensors_is_refused():
    for erase in (transforms.RandomErasing(), v2.RandomErasing()):
        with pytest.raises(ValueError, match="RandomErasing"):
            tl.features.check_cacheable_transform(
                transforms.Compose([transforms.ToTensor(), erase])
            )


def test_random_transforms_still_extract_without_a_cache(
    pretrained, image_folder, tmp_cache
):
    pipeline = transforms.Compose(
        [transforms.Resize(64), transforms.ColorJitter(0.4), transforms.ToTensor()]
    )
    dataset = tl.ImageFolder(image_folder, transform=pipeline)
    features, _ = tl.extract_features(
        tl.feature_extractor(pretrained), dataset, cache=False, progress=False
    )
    assert features.shape == (12, 1280)


def test_fixed_pipelines_are_cacheable():
    fixed = [
        None,
        tl.create_transform(image_size=64),
        torchvision.models.ResNet18_Weights.DEFAULT.transforms(),  # code, not a download
        timm.data.create_transform(input_size=224, is_training=False),
        timm.data.create_transform(
            input_size=224, is_training=False, crop_mode="border"
        ),
        v2.Compose(
            [
                v2.ToImage(),
                v2.Resize(64),
                v2.CenterCrop(64),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize([0.5] * 3, [0.5] * 3),
            ]
        ),
    ]
    for pipeline in fixed:
        tl.features.check_cacheable_transform(pipeline)
    for training in (
        tl.create_transform(train=True),
        timm.data.create_transform(224, is_training=True),
    ):
        with pytest.raises(ValueError, match="RandomResizedCrop"):
            tl.features.check_cacheable_transform(training)
