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


class MyCompose(transforms.Compose):
    """A subclass of Compose may call its steps any way it likes: refused too."""


HALF = ([0.5] * 3, [0.5] * 3)

# Steps that work on PIL images, placed before ToTensor ...
RANDOM_PIL_STEPS = {
    "ColorJitter": transforms.ColorJitter(0.4),
    "GaussianBlur": transforms.GaussianBlur(3),
    "RandAugment": transforms.RandAugment(),
    "TrivialAugmentWide": transforms.TrivialAugmentWide(),
    "AutoAugment": transforms.AutoAugment(),
    "AugMix": transforms.AugMix(),
    "ElasticTransform": transforms.ElasticTransform(),
    "Lambda": transforms.Lambda(lambda image: image),
    "SneakyResize": SneakyResize(64),
    "MyCompose": MyCompose([transforms.CenterCrop(64)]),
    "timm.ResizeKeepRatio(random_scale_prob)": timm.data.transforms.ResizeKeepRatio(
        64, random_scale_prob=0.5
    ),
    "timm.ResizeKeepRatio(interpolation=random)": timm.data.transforms.ResizeKeepRatio(
        64, interpolation="random"
    ),
    "timm.RandomResizedCropAndInterpolation": (
        timm.data.transforms.RandomResizedCropAndInterpolation(64)
    ),
}
# ... steps that need tensors, placed after it.
RANDOM_TENSOR_STEPS = {
    "RandomErasing": transforms.RandomErasing(),
    "Jitter": Jitter(),
}
# torchvision.transforms.v2 steps, in a v2 pipeline that starts with ToImage.
RANDOM_V2_STEPS = {
    "v2.ColorJitter": v2.ColorJitter(0.4),
    "v2.GaussianBlur": v2.GaussianBlur(3),
    "v2.RandAugment": v2.RandAugment(),
    "v2.TrivialAugmentWide": v2.TrivialAugmentWide(),
    "v2.AutoAugment": v2.AutoAugment(),
    "v2.AugMix": v2.AugMix(),
    "v2.ElasticTransform": v2.ElasticTransform(),
    "v2.RandomErasing": v2.RandomErasing(),
    "v2.Lambda": v2.Lambda(lambda image: image),
}


def random_pipeline(name):
    """A Resize/ToTensor/Normalize pipeline with the random step ``name`` inside."""
    if name in RANDOM_V2_STEPS:
        return v2.Compose(
            [
                v2.ToImage(),
                v2.Resize(64),
                RANDOM_V2_STEPS[name],
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(*HALF),
            ]
        )
    before = [RANDOM_PIL_STEPS[name]] if name in RANDOM_PIL_STEPS else []
    after = [RANDOM_TENSOR_STEPS[name]] if name in RANDOM_TENSOR_STEPS else []
    return transforms.Compose(
        [
            transforms.Resize(64),
            *before,
            transforms.ToTensor(),
            *after,
            transforms.Normalize(*HALF),
        ]
    )


@pytest.mark.parametrize(
    "name", [*RANDOM_PIL_STEPS, *RANDOM_TENSOR_STEPS, *RANDOM_V2_STEPS]
)
def test_random_transforms_are_refused_for_caching(
    name, pretrained, image_folder, tmp_cache
):
    pipeline = random_pipeline(name)
    step = {**RANDOM_PIL_STEPS, **RANDOM_TENSOR_STEPS, **RANDOM_V2_STEPS}[name]
    dataset = tl.ImageFolder(image_folder, transform=pipeline)
    backbone = tl.feature_extractor(pretrained)
    names_step = f"contains {type(step).__name__},"
    with pytest.raises(ValueError, match=names_step) as error:
        tl.features.feature_cache_key(backbone, dataset)
    message = str(error.value)
    assert "may differ from call to call" in message
    assert "tl.create_transform(config)" in message and "cache=False" in message
    with pytest.raises(ValueError, match=names_step):
        tl.extract_features(backbone, dataset, device="cpu", progress=False)
    assert not (tmp_cache / "features").exists()


def test_random_steps_inside_nested_containers_are_found():
    inner = torch.nn.Sequential(v2.Resize(64), v2.ColorJitter(0.4))
    for pipeline in (
        v2.Compose([v2.ToImage(), inner]),
        transforms.Compose([transforms.Compose([transforms.GaussianBlur(3)])]),
        torch.nn.Sequential(transforms.CenterCrop(64), inner),
    ):
        with pytest.raises(ValueError, match="ColorJitter|GaussianBlur"):
            tl.features.check_cacheable_transform(pipeline)


def test_training_transforms_are_refused():
    for training in (
        tl.create_transform(train=True),
        timm.data.create_transform(224, is_training=True),
        timm.data.create_transform(224, is_training=True, auto_augment="rand-m9"),
    ):
        with pytest.raises(ValueError, match="RandomResizedCrop"):
            tl.features.check_cacheable_transform(training)


def test_random_transform_cannot_be_cached(pretrained, image_folder):
    augmented = tl.ImageFolder(
        image_folder, transform=tl.create_transform(train=True, image_size=32)
    )
    with pytest.raises(ValueError, match="RandomResizedCrop"):
        tl.extract_features(
            tl.feature_extractor(pretrained), augmented, device="cpu", progress=False
        )


def test_random_transforms_still_extract_without_a_cache(
    pretrained, image_folder, tmp_cache
):
    dataset = tl.ImageFolder(image_folder, transform=random_pipeline("ColorJitter"))
    features, _ = tl.extract_features(
        tl.feature_extractor(pretrained),
        dataset,
        cache=False,
        device="cpu",
        progress=False,
    )
    assert features.shape == (12, 1280)
    assert not (tmp_cache / "features").exists()


def v2_pipeline(dtype=torch.float32):
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(64),
            v2.CenterCrop(64),
            v2.ToDtype(dtype, scale=True),
            v2.Normalize(*HALF),
        ]
    )


FIXED_PIPELINES = {
    "None": lambda: None,
    "create_transform": lambda: tl.create_transform(image_size=64),
    "create_transform(resnet18 config)": lambda: tl.create_transform(
        tl.data_config(tl.create_model("resnet18", pretrained=False))
    ),
    "v2": v2_pipeline,
    "ResNet18_Weights.transforms()": (
        lambda: torchvision.models.ResNet18_Weights.DEFAULT.transforms()
    ),
    "timm eval": lambda: timm.data.create_transform(input_size=224),
    "timm eval squash": lambda: timm.data.create_transform(
        input_size=224, crop_mode="squash"
    ),
    "timm eval border": lambda: timm.data.create_transform(
        input_size=224, crop_mode="border"
    ),
    "timm eval non-square": lambda: timm.data.create_transform(
        input_size=(3, 224, 192)
    ),
    "timm eval trim border": lambda: timm.data.create_transform(
        input_size=224, crop_border_pixels=2
    ),
    "timm eval prefetcher": lambda: timm.data.create_transform(
        input_size=224, use_prefetcher=True
    ),
    "timm ToTensor": lambda: transforms.Compose(
        [transforms.Resize(64), timm.data.transforms.ToTensor()]
    ),
    "nn.Sequential": lambda: transforms.Compose(
        [
            transforms.PILToTensor(),
            torch.nn.Sequential(
                transforms.Resize(64, antialias=True),
                transforms.CenterCrop(64),
                transforms.ConvertImageDtype(torch.float32),
                transforms.Normalize(*HALF),
            ),
        ]
    ),
}


@pytest.mark.parametrize("name", FIXED_PIPELINES)
def test_fixed_pipelines_are_cacheable(name, pretrained, image_folder):
    pipeline = FIXED_PIPELINES[name]()
    tl.features.check_cacheable_transform(pipeline)
    backbone = tl.feature_extractor(pretrained)
    key = tl.features.feature_cache_key(
        backbone, tl.ImageFolder(image_folder, transform=pipeline)
    )
    # The key is reproducible: a new copy of the same pipeline gives the same key.
    again = tl.features.feature_cache_key(
        backbone, tl.ImageFolder(image_folder, transform=FIXED_PIPELINES[name]())
    )
    assert len(key) == 32 and key == again


def test_v2_pipeline_extracts_and_caches(pretrained, image_folder, tmp_cache):
    dataset = tl.ImageFolder(image_folder, transform=v2_pipeline())
    backbone = tl.feature_extractor(pretrained)
    kwargs = {"device": "cpu", "progress": False}
    first, labels = tl.extract_features(backbone, dataset, **kwargs)
    assert len(list((tmp_cache / "features").glob("*.pt"))) == 1
    again, labels_again = tl.extract_features(backbone, dataset, **kwargs)
    assert torch.equal(first, again) and torch.equal(labels, labels_again)
    assert first.shape == (12, 1280) and labels.tolist() == dataset.targets


def test_cache_key_sees_settings_that_repr_hides(pretrained, image_folder):
    backbone = tl.feature_extractor(pretrained)

    def key(pipeline):
        dataset = tl.ImageFolder(image_folder, transform=pipeline)
        return tl.features.feature_cache_key(backbone, dataset)

    # repr(v2.ToDtype(...)) does not show the dtype.
    assert repr(v2_pipeline(torch.float16)) == repr(v2_pipeline(torch.float32))
    assert key(v2_pipeline(torch.float16)) != key(v2_pipeline(torch.float32))
    # repr(CenterCropOrPad(...)) does not show the fill.
    black, grey = (
        transforms.Compose(
            [timm.data.transforms.CenterCropOrPad(64, fill=fill), transforms.ToTensor()]
        )
        for fill in (0, 128)
    )
    assert repr(black) == repr(grey) and key(black) != key(grey)


def test_target_transform_is_refused_for_caching(pretrained, image_folder):
    dataset = tl.ImageFolder(image_folder, transform=tl.create_transform(image_size=64))
    dataset.target_transform = lambda label: 1 - label
    backbone = tl.feature_extractor(pretrained)
    with pytest.raises(ValueError, match="target_transform.*cache=False"):
        tl.features.feature_cache_key(
            backbone, torch.utils.data.Subset(dataset, [0, 1])
        )


def test_default_batch_size_follows_the_image_size() -> None:
    """8 images per batch on a CPU, 64 for tiles of 64 px or less and on a GPU."""
    from tlutils.features import _default_batch_size

    def images(size):
        return torch.utils.data.TensorDataset(
            torch.zeros(2, 3, size, size), torch.zeros(2)
        )

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert _default_batch_size(images(64), cpu) == 64
    assert _default_batch_size(images(128), cpu) == 8
    assert _default_batch_size(images(224), gpu) == 64
    assert _default_batch_size([], cpu) == 8  # empty: nothing to look at
