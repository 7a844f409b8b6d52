import pytest
import torch

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
    fresh, labels = tl.extract_features(backbone, small_dataset, cache=False, device="cpu", progress=False)
    first, _ = tl.extract_features(backbone, small_dataset, device="cpu", progress=False)
    files = list((tmp_cache / "features").glob("*.pt"))
    assert len(files) == 1
    again, labels_again = tl.extract_features(backbone, small_dataset, device="cpu", progress=False)
    assert torch.allclose(fresh, first, atol=1e-5) and torch.equal(first, again)
    assert torch.equal(labels, labels_again) and fresh.shape == (12, 1280)
    assert labels.tolist() == small_dataset.targets


def test_cache_key_changes_with_weights_files_and_transform(pretrained, small_dataset, image_folder):
    backbone = tl.feature_extractor(pretrained)
    key = tl.features.feature_cache_key(backbone, small_dataset)
    other_transform = tl.ImageFolder(image_folder, transform=tl.create_transform(image_size=32))
    assert tl.features.feature_cache_key(backbone, other_transform) != key
    subset = torch.utils.data.Subset(small_dataset, [0, 1, 2])
    assert tl.features.feature_cache_key(backbone, subset) != key
    changed = tl.feature_extractor(pretrained)
    with torch.no_grad():
        changed.conv_stem.weight[0, 0, 0, 0] += 1e-3
    assert tl.features.feature_cache_key(changed, small_dataset) != key
    (image_folder / "red" / "r0.png").write_bytes((image_folder / "blue" / "b0.jpg").read_bytes())
    assert tl.features.feature_cache_key(backbone, small_dataset) != key


def test_damaged_cache_file_is_recomputed(pretrained, small_dataset, tmp_cache):
    backbone = tl.feature_extractor(pretrained)
    features, _ = tl.extract_features(backbone, small_dataset, device="cpu", progress=False)
    (cache_file,) = (tmp_cache / "features").glob("*.pt")
    cache_file.write_bytes(b"truncated")
    again, _ = tl.extract_features(backbone, small_dataset, device="cpu", progress=False)
    assert torch.equal(features, again)


def test_random_transform_cannot_be_cached(pretrained, image_folder):
    augmented = tl.ImageFolder(image_folder, transform=tl.create_transform(train=True, image_size=32))
    with pytest.raises(ValueError, match="random"):
        tl.extract_features(tl.feature_extractor(pretrained), augmented, device="cpu", progress=False)


def test_linear_head_on_cached_features_separates_colours(pretrained, small_dataset, tmp_cache):
    features, labels = tl.extract_features(
        tl.feature_extractor(pretrained), small_dataset, device="cpu", progress=False
    )
    loader = torch.utils.data.DataLoader(tl.features_dataset(features, labels), batch_size=4, shuffle=True)
    tl.seed_everything(0)
    head = torch.nn.Linear(1280, 2)
    history = tl.fit(head, loader, loader, epochs=10, lr=1e-2, device="cpu", progress=False)
    assert history.val_acc[-1] == 1.0
