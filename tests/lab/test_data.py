"""dmcore.lab.data: offline datasets, long-tailed subsets, and the CIFAR reader on files the test writes."""

import pickle

import numpy as np
import pytest
import torch

from dmcore.lab import data


def test_mnist1d_is_the_canonical_dataset_and_leaves_numpy_alone():
    np.random.seed(123)
    expected_next = np.random.rand()
    np.random.seed(123)
    ds = data.mnist1d()
    assert np.random.rand() == expected_next                     # global state restored
    assert ds.x_train.shape == (4000, 40) and ds.x_test.shape == (1000, 40)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert torch.bincount(torch.cat([ds.y_train, ds.y_test])).tolist() == [500] * 10
    again = data.mnist1d()
    assert torch.equal(ds.x_train, again.x_train) and torch.equal(ds.y_test, again.y_test)
    assert data.mnist1d(num_samples=10000).x_train.shape == (8000, 40)


def test_digits():
    ds = data.digits()
    assert ds.x_train.shape[1] == 64 and len(ds.x_train) + len(ds.x_test) == 1797
    assert 0 <= ds.x_train.min() and ds.x_train.max() <= 1


def test_long_tailed_profile():
    ds = data.mnist1d()
    lt = data.long_tailed(ds, ratio=10, seed=0)
    counts = torch.bincount(lt.y_train, minlength=10)
    n_max = int(torch.bincount(ds.y_train).min())
    assert counts[0] == n_max and counts[9] == round(n_max / 10)
    assert all(a >= b for a, b in zip(counts.tolist(), counts[1:].tolist()))
    assert torch.equal(lt.x_test, ds.x_test)
    with pytest.raises(ValueError, match="ratio must be at least 1"):
        data.long_tailed(ds, ratio=0.5)


def test_validation_split_is_stratified_and_disjoint():
    ds = data.digits()
    split = data.with_validation(ds, fraction=0.2, seed=0)
    counts, val_counts = torch.bincount(ds.y_train), torch.bincount(split.y_val, minlength=10)
    assert val_counts.tolist() == [round(0.2 * int(n)) for n in counts]
    assert len(split.y_train) + len(split.y_val) == len(ds.y_train)
    rows = lambda x: {tuple(r) for r in x.tolist()}
    assert rows(split.x_train) | rows(split.x_val) == rows(ds.x_train)
    assert not rows(split.x_train) & rows(split.x_val)
    assert torch.equal(split.x_test, ds.x_test) and "validation" in repr(split)
    assert torch.equal(data.with_validation(ds, 0.2, seed=0).y_val, split.y_val)
    with pytest.raises(ValueError, match="fraction must be in"):
        data.with_validation(ds, fraction=1.0)
    with pytest.raises(ValueError, match="already has a validation split"):
        data.with_validation(split)


def write_cifar(root, name, n_train, n_test):
    rng = np.random.default_rng(0)
    if name == "cifar10":
        folder, key = root / "cifar-10-batches-py", b"labels"
        files = {f"data_batch_{i}": n_train for i in range(1, 6)} | {"test_batch": n_test}
    else:
        folder, key = root / "cifar-100-python", b"fine_labels"
        files = {"train": n_train, "test": n_test}
    folder.mkdir(parents=True)
    written = {}
    for fname, n in files.items():
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 key: rng.integers(0, 10 if name == "cifar10" else 100, n).tolist(), b"batch_label": b"test"}
        (folder / fname).write_bytes(pickle.dumps(batch))
        written[fname] = batch
    return written


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_reader_on_files_in_the_official_format(tmp_path, name):
    written = write_cifar(tmp_path, name, n_train=6, n_test=4)
    ds = data.cifar(tmp_path, name)
    train_files = [f"data_batch_{i}" for i in range(1, 6)] if name == "cifar10" else ["train"]
    key = b"labels" if name == "cifar10" else b"fine_labels"
    assert ds.x_train.shape == (6 * len(train_files), 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32)
    assert ds.y_train.tolist() == sum((written[f][key] for f in train_files), [])
    raw = np.concatenate([written[f][b"data"] for f in train_files]).reshape(-1, 3, 32, 32) / 255
    mean, std = raw.mean((0, 2, 3), keepdims=True), raw.std((0, 2, 3), ddof=1, keepdims=True)
    np.testing.assert_allclose(ds.x_train.numpy(), (raw - mean) / std, rtol=1e-4, atol=1e-4)
    assert ds.num_classes == (10 if name == "cifar10" else 100)


def test_cifar_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_batch_1 not found"):
        data.cifar(tmp_path, "cifar10")
    with pytest.raises(ValueError, match="'cifar10' or 'cifar100'"):
        data.cifar(tmp_path, "svhn")


def test_mnist1d_large_has_fresh_training_sequences_and_the_canonical_test_set():
    canonical = data.mnist1d()
    large = data.mnist1d_large(2000, seed=3)
    assert large.name == "mnist1d-2k" and large.x_train.shape == (2000, 40)
    assert torch.equal(large.x_test, canonical.x_test) and torch.equal(large.y_test, canonical.y_test)
    assert torch.bincount(large.y_train, minlength=10).min() >= 190
    # fresh sequences: none equals a canonical training or test sequence
    both = torch.cat([canonical.x_train, canonical.x_test])
    assert torch.cdist(large.x_train[:500], both).min() > 1e-3
    with pytest.raises(ValueError, match="seed 42 generates the canonical dataset"):
        data.mnist1d_large(2000, seed=42)


def _rows(x):
    return {tuple(row) for row in x.numpy().tolist()}


def test_the_fresh_test_set_is_disjoint_from_every_split_it_judges():
    """The 10,000 fresh sequences share none with the canonical training, validation and test splits, nor
    with the larger training sets of the generator's seed 1; their labels are balanced like the others."""
    fresh = data.by_name("mnist1d-val0.2-fresh")
    assert fresh.x_fresh.shape == (10_000, 40) and fresh.name == "mnist1d-val0.2-fresh"
    seen = _rows(fresh.x_fresh)
    assert len(seen) == 10_000
    for split in (fresh.x_train, fresh.x_val, fresh.x_test, data.by_name("mnist1d-4k").x_train):
        assert not seen & _rows(split)
    counts = torch.bincount(fresh.y_fresh, minlength=10)
    assert counts.min() > 800 and counts.max() < 1200
    assert torch.equal(fresh.x_test, data.mnist1d().x_test)          # the exploratory test set is unchanged
    with pytest.raises(ValueError, match="generator seed 42"):
        data.with_fresh_test(data.mnist1d(), seed=42)
    with pytest.raises(ValueError, match="MNIST-1D only"):
        data.with_fresh_test(data.digits())
    with pytest.raises(ValueError, match="unknown dataset 'digits-fresh'"):
        data.by_name("digits-fresh")
