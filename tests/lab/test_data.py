"""dmcore.lab.data: offline datasets, long-tailed subsets, and the CIFAR and Fashion-MNIST readers on files
the test writes."""

import gzip
import pickle
import re
import struct

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


# ---------------------------------------------------------------- Fashion-MNIST and its IDX files

def idx_bytes(array, code=0x08):
    """An IDX file's bytes, written from the format's description: 00 00 <code> <d>, d big-endian uint32
    sizes, then the elements."""
    array = np.asarray(array, dtype=np.uint8)
    return bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_fashion(root, n_train=50, n_test=10, gzipped=True, seed=0):
    """The four Fashion-MNIST files with random pixels and every class equally often (n divisible by 10)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            raw = idx_bytes(array)
            name = f"{split}-{kind}-ubyte" + (".gz" if gzipped else "")
            (root / name).write_bytes(gzip.compress(raw) if gzipped else raw)
        written[split] = images, labels
    return written


def names(path):
    return re.escape(str(path))


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
def test_read_idx_reads_plain_and_gzipped_files_exactly(tmp_path, gzipped):
    rng = np.random.default_rng(1)
    images, labels = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8), np.array([0, 9, 3, 3, 1, 7, 255], np.uint8)
    for name, array in (("images", images), ("labels", labels)):
        raw = idx_bytes(array)
        # named without .gz either way: gzip is told by its magic number, not by the name
        (tmp_path / name).write_bytes(gzip.compress(raw) if gzipped else raw)
    read_images, read_labels = data.read_idx(tmp_path / "images"), data.read_idx(str(tmp_path / "labels"))
    assert read_images.dtype == np.uint8 and read_images.shape == (7, 28, 28)
    np.testing.assert_array_equal(read_images, images)
    np.testing.assert_array_equal(read_labels, labels)
    read_images[0, 0, 0] = 1                                              # writable, not a view of bytes
    # sizes above 255 take more than the last byte of their big-endian uint32
    wide = rng.integers(0, 256, (2, 300), dtype=np.uint8)
    (tmp_path / "wide").write_bytes(idx_bytes(wide))
    np.testing.assert_array_equal(data.read_idx(tmp_path / "wide"), wide)


def test_read_idx_errors_name_the_file_and_the_problem(tmp_path):
    good = idx_bytes(np.zeros((7, 28, 28), np.uint8))
    cases = {
        "truncated-data": (good[:-5], r"truncated IDX file: .* need 5488 data bytes, found 5483"),
        "truncated-header": (good[:9], "truncated IDX file: 9 bytes, fewer than the 16 of a header"),
        "truncated-magic": (good[:3], "truncated IDX file: 3 bytes"),
        "trailing": (good + b"\0", "IDX file with bytes after its data: .* found 5489"),
        "bad-magic": (b"\x01\x00" + good[2:], "not an IDX file: its magic number is 01 00 08 03"),
        "float": (idx_bytes(np.zeros((2, 2), np.uint8), code=0x0D)[:12] + bytes(16),
                  r"IDX type code 0x0d \(float32\): only 0x08 \(unsigned byte\)"),
        "zero-dims": (bytes([0, 0, 8, 0]), "IDX file with 0 dimensions: expected at least 1"),
        "truncated-gzip": (gzip.compress(good)[:-20], "the gzip stream is truncated or corrupt"),
    }
    for name, (raw, problem) in cases.items():
        (tmp_path / name).write_bytes(raw)
        with pytest.raises(ValueError, match=names(tmp_path / name) + ": " + problem):
            data.read_idx(tmp_path / name)


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
def test_fashion_mnist_reader_on_a_tiny_set(tmp_path, gzipped):
    written = write_fashion(tmp_path, n_train=50, n_test=10, gzipped=gzipped)
    ds = data.fashion_mnist(tmp_path)
    assert ds.name == "fashion-mnist" and ds.num_classes == 10
    assert ds.x_train.shape == (50, 1, 28, 28) and ds.x_test.shape == (10, 1, 28, 28)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.y_train.tolist() == written["train"][1].tolist() and ds.y_test.tolist() == written["t10k"][1].tolist()
    raw_train, raw_test = written["train"][0] / 255, written["t10k"][0] / 255
    mean, std = raw_train.mean(), raw_train.std(ddof=1)                 # the training split's, one channel
    np.testing.assert_allclose(ds.x_train.numpy()[:, 0], (raw_train - mean) / std, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ds.x_test.numpy()[:, 0], (raw_test - mean) / std, rtol=1e-4, atol=1e-5)
    assert abs(float(ds.x_train.mean())) < 1e-5 and abs(float(ds.x_train.std()) - 1) < 1e-5


def test_fashion_mnist_errors_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist") as missing:
        data.fashion_mnist(tmp_path / "nowhere")
    assert "nowhere lacks train-images-idx3-ubyte[.gz]" in str(missing.value) and "make" in str(missing.value)

    def broken(name, labels=None, images=None):
        root = tmp_path / name
        write_fashion(root, n_train=10, n_test=10, gzipped=False)
        if labels is not None:
            (root / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
        if images is not None:
            (root / "train-images-idx3-ubyte").write_bytes(idx_bytes(images))
        return root

    root = broken("count", labels=np.arange(9) % 10)
    with pytest.raises(ValueError, match=names(root / "train-images-idx3-ubyte") + " holds 10 images but "
                       + names(root / "train-labels-idx1-ubyte") + " holds 9 labels"):
        data.fashion_mnist(root)
    root = broken("label", labels=[0, 1, 2, 3, 4, 5, 6, 7, 10, 9])
    with pytest.raises(ValueError, match=names(root / "train-labels-idx1-ubyte")
                       + r": labels lie in 0\.\.9, found 10 at index 8 \(1 out of range\)"):
        data.fashion_mnist(root)
    root = broken("shape", images=np.zeros((10, 32, 32), np.uint8))
    with pytest.raises(ValueError, match=names(root / "train-images-idx3-ubyte")
                       + r": expected images of shape \(N, 28, 28\), found \(10, 32, 32\)"):
        data.fashion_mnist(root)
    root = broken("truncated")
    path = root / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match=names(path) + ": truncated IDX file"):
        data.fashion_mnist(root)


def test_fashion_mnist_names(tmp_path, monkeypatch):
    assert data.parse_name("fashion-mnist-val0.2") == ("fashion-mnist", None, None, "0.2", None)
    assert data.parse_name("fashion-mnist-lt10-val0.2") == ("fashion-mnist", None, "10", "0.2", None)
    for bad in ("fashion-mnist-fresh", "fashion-mnist-val0.2-fresh", "fashion-mnist-40k", "fashion_mnist"):
        with pytest.raises(ValueError, match=f"unknown dataset {bad!r}: expected .* fashion-mnist"):
            data.parse_name(bad)
    write_fashion(tmp_path / "files", n_train=50, n_test=10)
    monkeypatch.setattr(data, "FASHION_MNIST_ROOT", tmp_path / "files")   # the default folder, here a tiny set
    split = data.by_name("fashion-mnist-val0.2")
    assert split.name == "fashion-mnist-val0.2" and split.x_val.shape == (10, 1, 28, 28)
    assert torch.bincount(split.y_val, minlength=10).tolist() == [1] * 10       # stratified: 20% of 5 per class
    assert len(split.y_train) == 40 and split.x_test.shape == (10, 1, 28, 28)
    assert torch.equal(data.by_name("fashion-mnist-val0.2", tmp_path / "files").y_val, split.y_val)  # data_dir
    assert data.by_name("fashion-mnist-lt5").name == "fashion-mnist-lt5"
    monkeypatch.setattr(data, "FASHION_MNIST_ROOT", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        data.by_name("fashion-mnist")


@pytest.mark.skipif(not data.FASHION_MNIST_ROOT.is_dir(),
                    reason=f"Debian's dataset-fashion-mnist is not installed ({data.FASHION_MNIST_ROOT} is absent; "
                           "`make fashion-mnist` installs it)")
def test_fashion_mnist_from_debians_files():
    ds = data.fashion_mnist()
    assert ds.x_train.shape == (60_000, 1, 28, 28) and ds.x_test.shape == (10_000, 1, 28, 28)
    assert torch.bincount(ds.y_train).tolist() == [6000] * 10 and torch.bincount(ds.y_test).tolist() == [1000] * 10
    assert abs(float(ds.x_train.mean())) < 1e-4 and abs(float(ds.x_train.std()) - 1) < 1e-4
