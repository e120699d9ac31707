"""The language-model evidence: the Python-source dataset on files the test writes, the byte-level model,
and the trainer (its losses, its determinism, its metrics)."""

import hashlib
import math

import pytest
import torch

from dmcore import edf
from dmcore.lab import data, experiments, language, models, train


def _write(folder, texts):
    files = {}
    for i, text in enumerate(texts):
        (folder / f"m{i}.py").write_bytes(text)
        files[f"m{i}.py"] = hashlib.sha256(text).hexdigest()
    return files


def test_python_source_cuts_blocks_into_examples(tmp_path):
    text = bytes(range(65, 65 + 20)) * 11          # 220 bytes: blocks of 16 -> 14 blocks (the last 12 bytes)
    files = _write(tmp_path, [text[:100], text[100:]])
    ds = data.python_source(tmp_path, files, context=3, block=16)
    assert ds.num_classes == 20 and ds.name == "python-source"
    # file 0: blocks 0..6 (the last of 4 bytes), file 1: blocks 7..14 (the last of 8); block 8 (file 1's
    # second) validation, block 9 test
    assert len(ds.y_val) == 16 - 3 and len(ds.y_test) == 16 - 3
    for x, y, start in ((ds.x_val, ds.y_val, 116), (ds.x_test, ds.y_test, 132)):
        expected = torch.tensor(list(text[start:start + 16])) - 65
        assert torch.equal(x[0], expected[:3]) and y[0] == expected[3] and y[-1] == expected[-1]
    for x, y in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val), (ds.x_test, ds.y_test)):
        assert x.dtype == torch.int64 and x.shape[1] == 3
        assert torch.equal((x[:, -1] + 1) % 20, y)           # the text counts up: each byte follows the last
    # training blocks 0..7 and 10..14: a full block gives 16 - 3 examples, block 6 (4 bytes) 1, block 14 (8) 5
    assert len(ds.y_train) == 6 * 13 + 1 + 13 + 4 * 13 + 5
    small = data.python_source(tmp_path, files, context=3, block=16, small=True)      # blocks 0 and 10
    assert small.name == "python-source-small" and len(small.y_train) == 2 * 13 and torch.equal(small.y_test, ds.y_test)


def test_python_source_names_what_is_wrong(tmp_path):
    files = _write(tmp_path, [b"x" * 40])
    with pytest.raises(ValueError, match="m0.py is not the file the dataset pins"):
        data.python_source(tmp_path, {"m0.py": "0" * 64})
    with pytest.raises(FileNotFoundError, match="missing.py does not exist"):
        data.python_source(tmp_path, {"missing.py": "0" * 64})
    with pytest.raises(ValueError, match="too few for a validation and a test block"):
        data.python_source(tmp_path, files, context=3, block=16)
    with pytest.raises(ValueError, match="context must be a whole number"):
        data.python_source(tmp_path, files, context=16, block=16)
    with pytest.raises(ValueError, match="unknown dataset 'python-source-val0.2'"):
        data.by_name("python-source-val0.2")


def test_the_books_text_is_the_pinned_standard_library():
    ds = data.by_name("python-source")
    assert ds.num_classes == 98 and ds.x_train.shape == (241421, 32)
    assert len(ds.y_val) == 26627 and len(ds.y_test) == 27564
    assert len(data.by_name("python-source-small").y_train) == 30240


def test_byte_mlp_takes_byte_indices():
    torch.manual_seed(0)
    net = models.build("byte_mlp", 7, 5)
    x = torch.randint(0, 7, (3, 5))
    assert net(x).shape == (3, 7) and net.features(x).shape == (3, 256)
    torch.testing.assert_close(net(x), net.head(net.features(x)))
    with pytest.raises(ValueError, match=r"ByteMLP takes \(N, 5\) int64 byte indices"):
        net(x.float())


def test_loss_terms_follow_each_losss_convention():
    assert language.loss_terms("cce") == (edf.cce(), "count", 0.0)
    assert language.loss_terms("dft") == (edf.dft(), "count", 0.0)
    assert language.loss_terms("gce") == (edf.gce(0.7), "count", 0.0)
    assert language.loss_terms("dm:lam=1,beta=16") == (edf.dm(1, 16), "batch", 1e-6)
    with pytest.raises(ValueError, match="no weighting of one gradient direction"):
        language.loss_terms("nce+rce")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text")
    gen = torch.Generator().manual_seed(0)
    cycle = torch.arange(900) % 6                    # "abcdef" over and over, a tenth of the letters random
    texts = [bytes((97 + torch.where(torch.rand(900, generator=gen) < 0.1, torch.randint(0, 6, (900,), generator=gen),
                                     cycle)).tolist()) for _ in range(2)]
    return data.python_source(folder, _write(folder, texts), context=4, block=64)


PROTOCOL = train.Protocol(steps=20, batch_size=16, lr=0.01, weight_decay=0.0, eval_every=8)


def test_a_run_is_its_own_and_is_recorded_at_every_evaluation(tiny):
    runs = [train.Run("dm:lam=1,beta=16", "symmetric", 0.4, 1, 0.01), train.Run("cce", "symmetric", 0.0, 0, 0.003)]
    both = language.train_runs("byte_mlp", tiny, runs, PROTOCOL)
    alone = language.train_runs("byte_mlp", tiny, runs[:1], PROTOCOL)
    assert both[0]["history"] == alone[0]["history"]
    history = both[0]["history"]
    assert [h["step"] for h in history] == [0, 8, 16, 20] and both[0]["diverged_step"] is None
    assert both[0]["final_test_acc"] == history[-1]["test_acc"] and both[0]["realised_rate"] == pytest.approx(0.4, abs=1e-3)
    first = history[0]
    assert first["test_nll"] == pytest.approx(-math.log(1 / 6), rel=0.2)      # about uniform at initialisation
    assert 0 <= first["fit_noisy"] <= 1 and 0 <= first["val_acc_noisy"] <= 1
    clean = both[1]["history"][-1]
    assert math.isnan(clean["fit_noisy"]) and clean["val_acc"] == clean["val_acc_noisy"]
    assert history[-1]["test_acc"] > 0.2                                           # 6 letters: it learns something


def test_the_last_step_is_evaluated_when_it_ends_an_epoch(tiny):
    epoch = len(tiny.y_train) // 16
    protocol = train.Protocol(steps=epoch, batch_size=16, lr=0.01, weight_decay=0.0, eval_every=50)
    (result,) = language.train_runs("byte_mlp", tiny, [train.Run("cce", "symmetric", 0.3, 0, 0.01)], protocol)
    assert [h["step"] for h in result["history"]] == [0, 50, epoch]


def test_the_trainer_refuses_what_it_cannot_train(tiny):
    with pytest.raises(ValueError, match="byte-level model on the CPU"):
        language.train_runs("mlp", tiny, [train.Run("cce")], PROTOCOL)
    with pytest.raises(ValueError, match="need a validation split"):
        language.train_runs("byte_mlp", data.digits(), [train.Run("cce")], PROTOCOL)


def test_the_token_records_are_the_registered_grid():
    for key, dataset in experiments.TOKEN.items():
        e = experiments.get(f"token-weighting-{key}")
        assert e.dataset == dataset and e.trainer == "language" and e.model == "byte_mlp"
        assert {r.loss for r in e.runs} == set(experiments.TOKEN_LOSSES) and e.seeds == list(range(5))
        assert {r.lr for r in e.runs} >= set(experiments.TOKEN_LRS) and {r.rate for r in e.runs} == {0.0, 0.3, 0.6}
