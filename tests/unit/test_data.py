from __future__ import annotations

import pytest
import torch

from esper.data import digits, spirals


def test_spirals_split_is_deterministic_and_independent_of_the_loader_seed() -> None:
    a, b = spirals(n=500, loader_seed=0), spirals(n=500, loader_seed=9)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(a, split).x, getattr(b, split).x)
    assert a.sizes() == {"train": 300, "val": 100, "test": 100}
    assert a.input_shape == (2,) and a.num_classes == 2
    first_a = next(iter(a.train))[0]
    first_b = next(iter(b.train))[0]
    assert not torch.equal(first_a, first_b), "the loader seed changes the shuffling"


def test_splits_do_not_overlap() -> None:
    data = spirals(n=400)
    rows = [tuple(r.tolist()) for split in ("train", "val", "test") for r in getattr(data, split).x]
    assert len(rows) == len(set(rows)) == 400


def test_digits_are_images_from_the_installed_package() -> None:
    data = digits()
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10
    assert sum(data.sizes().values()) == 1797
    assert data.train.x.min() >= 0.0 and data.train.x.max() <= 1.0


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"arms": 1}, "dataset.arms"),
        ({"val_fraction": 1.5}, "dataset.val_fraction"),
        # an empty split: ZeroDivisionError at the first evaluation (val), after training (test)
        ({"val_fraction": 0.0001}, r"dataset.val_fraction=0.0001 leaves no sample of the 2000"),
        ({"test_fraction": 0.0001}, r"dataset.test_fraction=0.0001 leaves no sample"),
        ({"batch_size": 0}, "dataset.batch_size"),
        ({"noise": -1}, "dataset.noise"),
    ],
)
def test_bad_dataset_values_name_their_key(kwargs, key) -> None:
    with pytest.raises(ValueError, match=key):
        spirals(**kwargs)
