"""The one recipe (chapters 3-5): a value with every default once, run by one function
through fit; the code digest that says when results are stale."""

import copy

import pytest
import torch
from torch.utils.data import TensorDataset

import tlutils as tl
from tlutils import recipe as rc
from tlutils.recipe import REFERENCE, Recipe, run


@pytest.fixture(scope="module")
def lite0():
    return tl.create_model().eval()


def images(n=8, classes=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(
        torch.rand(n, 3, size, size, generator=g), torch.arange(n) % classes
    )


def weights_of(model, prefix):
    return {
        n: p.detach().clone()
        for n, p in model.named_parameters()
        if n.startswith(prefix)
    }


def changed(before, model):
    now = dict(model.named_parameters())
    return {n for n, w in before.items() if not torch.equal(w, now[n].detach())}


def test_the_reference_recipe_states_every_default_once():
    assert REFERENCE == Recipe()
    assert REFERENCE.settings() == {
        "stages": None, "reinit": [], "head": "probe", "opt": "adamw", "lr": 1e-4,
        "decay": 1.0, "weight_decay": 0.05, "schedule": "cosine", "lr_warmup": 0.1,
        "augment": "crop_flip", "batch_size": 32, "bn_stats": "fixed", "epochs": 3,
    }  # fmt: skip
    assert "10% linear lr warm-up" in REFERENCE.describe()
    assert REFERENCE.replace(lr=3e-4).lr == 3e-4 and REFERENCE.lr == 1e-4


@pytest.mark.parametrize(
    "bad, match",
    [({"head": "warm"}, "head"), ({"lr": 0}, "lr"), ({"lr_warmup": 1.0}, "share"),
     ({"augment": "mixup"}, "augment"), ({"epochs": 0}, "epochs")],
)  # fmt: skip
def test_a_wrong_choice_is_refused_by_name(bad, match):
    with pytest.raises(ValueError, match=match):
        Recipe(**bad)


def test_the_augmentation_follows_the_recipe():
    config = tl.data_config(tl.create_model(pretrained=False))
    names = {
        a: [type(t).__name__ for t in Recipe(augment=a).train_transform(config, 64).transforms]
        for a in ("crop_flip", "crop", "none")
    }  # fmt: skip
    assert names["crop_flip"][:2] == ["RandomResizedCrop", "RandomHorizontalFlip"]
    assert (
        names["crop"][0] == "RandomResizedCrop"
        and "RandomHorizontalFlip" not in names["crop"]
    )
    assert names["none"][:2] == ["Resize", "CenterCrop"]


def test_only_the_recipes_stages_and_the_head_train(lite0):
    model = copy.deepcopy(lite0)
    head = torch.nn.Linear(1280, 2)
    before = {**weights_of(model, "blocks"), **weights_of(model, "conv_stem")}
    recipe = Recipe(stages=(7, 8), epochs=1, batch_size=4, lr=1e-2)
    history = run(recipe, model, images(), head=head, device="cpu", progress=False)
    assert len(history.train_loss) == 1
    moved = changed(before, model)
    assert moved and all(n.startswith("blocks.6") for n in moved)  # stage 7 = blocks.6
    assert not torch.equal(model.classifier.weight, head.weight)  # a copy trained
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_a_probe_recipe_needs_the_probe_head_and_a_random_one_its_classes(lite0):
    model = copy.deepcopy(lite0)
    with pytest.raises(ValueError, match="probe_head"):
        run(REFERENCE.replace(epochs=1), model, images(), progress=False)
    with pytest.raises(ValueError, match="num_classes"):
        run(REFERENCE.replace(head="random"), model, images(), progress=False)
    run(Recipe(head="random", epochs=1, batch_size=4), model, images(classes=3),
        num_classes=3, device="cpu", progress=False)  # fmt: skip
    assert model.classifier.out_features == 3


def test_reinitialised_stages_start_from_new_random_weights(lite0):
    model = copy.deepcopy(lite0)
    before = weights_of(model, "blocks.6")
    rc.reinitialise(model, [7], seed=0)
    assert changed(before, model) == set(before)
    again = copy.deepcopy(lite0)
    rc.reinitialise(again, [7], seed=0)
    assert all(
        torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters())
    )


def test_the_learning_rate_warms_up_then_follows_the_cosine(lite0, monkeypatch):
    seen = []
    real = tl.train.lr_schedule

    def spy(optimizer, total, schedule, warmup):
        seen.append((total, schedule, warmup))
        return real(optimizer, total, schedule, warmup)

    monkeypatch.setattr(tl.train, "lr_schedule", spy)
    model = copy.deepcopy(lite0)
    recipe = Recipe(head="random", epochs=2, batch_size=2, lr_warmup=0.25)
    run(recipe, model, images(), num_classes=2, device="cpu", progress=False)
    assert seen == [(8, "cosine", 2)]  # 4 steps an epoch, 2 epochs, a quarter warm


def test_the_same_seed_gives_the_same_run(lite0):
    out = []
    for _ in range(2):
        model = copy.deepcopy(lite0)
        run(Recipe(head="random", epochs=1, batch_size=4), model, images(),
            num_classes=2, seed=3, device="cpu", progress=False)  # fmt: skip
        out.append(model.classifier.weight.detach().clone())
    assert torch.equal(*out)


def test_the_code_digest_changes_with_the_code_not_with_its_words():
    same = rc._without_docstrings('def f(x):\n    """One."""\n    return x + 1  # c\n')
    reworded = rc._without_docstrings('def f(x):\n    """Two."""\n    return x + 1\n')
    other = rc._without_docstrings('def f(x):\n    """One."""\n    return x + 2\n')
    assert same == reworded and same != other
    digest = rc.code_digest()
    assert digest == rc.code_digest() and len(digest) == 16

    def another(x):
        return x

    assert rc.code_digest([another]) != digest
