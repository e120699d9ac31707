"""The sweep: tidy CSV files, resuming, interruption, refusal of a mismatched directory, the CLI."""

import json
import subprocess
import sys

import pytest
import torch

from dmcore.lab import cli, data, sweep, train

TINY = train.Protocol(steps=20, batch_size=50, eval_every=10)


def rows(path):
    return sweep.read_csv(path)


def test_sweep_writes_tidy_files(tmp_path):
    runs = sweep.grid(["cce", "dm:lam=1,beta=4"], [("symmetric", [0.0, 0.4])], seeds=1)
    result = sweep.run_sweep(tmp_path, "digits", "mlp", runs, TINY, chunk=3)
    assert len(result) == 4 and {r["run_id"] for r in result} == {r.run_id for r in runs}
    history = rows(tmp_path / sweep.HISTORY_FILE)
    assert len(history) == 4 * 3 and {h["step"] for h in history} == {"0", "10", "20"}
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["protocol"]["steps"] == 20 and config["model"] == "mlp" and len(config["runs"]) == 4
    assert not list(tmp_path.glob("*.partial"))


def test_rerun_skips_finished_runs(tmp_path, monkeypatch):
    runs = sweep.grid(["cce"], [("symmetric", [0.2])], seeds=2)
    sweep.run_sweep(tmp_path, "digits", "mlp", runs, TINY)
    monkeypatch.setattr(train, "train_runs", lambda *a, **k: pytest.fail("a finished run was trained again"))
    assert len(sweep.run_sweep(tmp_path, "digits", "mlp", runs, TINY)) == 2


def test_an_interrupted_sweep_keeps_the_finished_chunks_whole(tmp_path, monkeypatch):
    runs = sweep.grid(["cce", "mae"], [("symmetric", [0.2])], seeds=1)
    real, calls = train.train_runs, []

    def fail_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "train_runs", fail_second)
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(tmp_path, "digits", "mlp", runs, TINY, chunk=1)
    assert [r["loss"] for r in rows(tmp_path / "runs.csv")] == ["cce"]
    assert len(rows(tmp_path / sweep.HISTORY_FILE)) == 3 and not list(tmp_path.glob("*.partial"))
    monkeypatch.setattr(train, "train_runs", real)
    assert [r["loss"] for r in sweep.run_sweep(tmp_path, "digits", "mlp", runs, TINY, chunk=1)] == ["cce", "mae"]


def test_a_directory_with_another_configuration_is_refused(tmp_path):
    sweep.run_sweep(tmp_path, "digits", "mlp", sweep.grid(["cce"], [("symmetric", [0.0])], 1), TINY)
    with pytest.raises(ValueError, match="another configuration"):
        sweep.run_sweep(tmp_path, "digits", "mlp", sweep.grid(["cce"], [("symmetric", [0.0])], 1),
                        train.Protocol(steps=30, batch_size=50, eval_every=10))


def test_command_line_sweep(tmp_path, capsys):
    args = ["sweep", "--dataset", "digits", "--model", "mlp", "--losses", "cce,dm:lam=1,beta=4,gce",
            "--noise", "symmetric:0.2", "--noise", "pair:0.2", "--seeds", "1", "--steps", "10",
            "--eval-every", "5", "--out", str(tmp_path)]
    assert cli.main(args) == 0
    assert sorted(r["loss"] for r in rows(tmp_path / "runs.csv")) == ["cce", "cce", "dm:lam=1,beta=4",
                                                                       "dm:lam=1,beta=4", "gce", "gce"]
    assert cli.main(args[:-1] + [str(tmp_path), "--steps", "20"]) == 2
    assert "another configuration" in capsys.readouterr().err
    assert cli.main(["sweep", "--losses", "hinge", "--out", str(tmp_path / "x")]) == 2
    assert "unknown loss 'hinge'" in capsys.readouterr().err


def test_no_progress_bar_when_not_a_terminal(tmp_path):
    done = subprocess.run([sys.executable, "-m", "dmcore", "sweep", "--dataset", "digits", "--model", "mlp",
                           "--losses", "cce", "--noise", "symmetric:0", "--seeds", "1", "--steps", "10",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300, check=True)
    assert "step" not in done.stderr and "1 runs in" in done.stdout


def test_results_read_back_as_numbers(tmp_path):
    runs = sweep.grid(["cce", "gce"], [("symmetric", [0.0, 0.4])], seeds=2)
    sweep.run_sweep(tmp_path, "digits", "mlp", runs, TINY)
    table, history = sweep.read_results(tmp_path)
    assert len(table) == 8 and len(history) == 8 * 3
    clean = [r for r in table if r["rate"] == 0.0]
    assert all(r["fit_noisy"] != r["fit_noisy"] for r in clean)           # NaN: no noisy examples
    assert {h["step"] for h in history} == {0, 10, 20} and isinstance(table[0]["seed"], int)
    with pytest.raises(FileNotFoundError, match="no finished runs"):
        sweep.read_results(tmp_path / "elsewhere")


def test_dataset_names():
    lt = data.by_name("digits-lt5")
    counts = torch.bincount(lt.y_train)
    assert counts[9] == round(int(counts[0]) / 5) and lt.x_val is None
    both = data.by_name("digits-lt5-val0.2")
    assert len(both.y_train) + len(both.y_val) == len(lt.y_train)
    assert data.by_name("mnist1d-2k-val0.5").name == "mnist1d-2k-val0.5"
    with pytest.raises(ValueError, match="dataset cifar10 is read from files: give the folder"):
        data.by_name("cifar10")
    for bad in ("cifar5", "digits-val", "digits-val0.2-lt5", "digits-40k", "mnist1d-0k"):
        with pytest.raises(ValueError, match="unknown dataset"):
            data.by_name(bad)


# ---------------------------------------------------------------- every argument is validated

BAD_ARGUMENTS = [
    (["sweep", "--batch-size", "0"], "--batch-size: expected a whole number >= 1, got 0"),
    (["sweep", "--eval-every", "0"], "--eval-every: expected a whole number >= 1, got 0"),
    (["sweep", "--steps", "-5"], "--steps: expected a whole number >= 1, got -5"),
    (["sweep", "--seeds", "0"], "--seeds: expected a whole number >= 1, got 0"),
    (["sweep", "--chunk", "0"], "--chunk: expected a whole number >= 1, got 0"),
    (["sweep", "--threads", "0"], "--threads: expected a whole number >= 1, got 0"),
    (["sweep", "--lr", "-0.1"], "--lr: expected a finite number > 0, got -0.1"),
    (["sweep", "--lr", "nan"], "--lr: expected a finite number > 0, got nan"),
    (["sweep", "--noise", "symmetric:1.5"], "--noise: noise rates lie in [0, 1], got 1.5"),
    (["sweep", "--noise", "open-set:0.2"], "--noise: unknown noise scheme 'open-set'"),
    (["sweep", "--device", "gpu"], "--device: expected cpu, cuda or cuda:K, got 'gpu'"),
    (["bench", "--repeats", "0"], "--repeats: expected a whole number >= 1, got 0"),
    (["bench", "--threads", "-1"], "--threads: expected a whole number >= 1, got -1"),
    (["bench", "--device", "tpu"], "--device: expected cpu, cuda or cuda:K"),
    (["reproduce", "label-noise", "--sample", "0"], "--sample: expected a whole number >= 1, got 0"),
    (["reproduce", "label-noise", "--threads", "0"], "--threads: expected a whole number >= 1, got 0"),
    (["reproduce", "label-noise", "--mode", "exact"], "--mode: invalid choice: 'exact'"),
    (["experiments", "--threads", "0"], "--threads: expected a whole number >= 1, got 0"),
]


@pytest.mark.parametrize("argv, message", BAD_ARGUMENTS, ids=[" ".join(a) for a, _ in BAD_ARGUMENTS])
def test_command_line_arguments_are_validated(argv, message, tmp_path, capsys):
    if argv[0] == "sweep":
        argv = argv + ["--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit:
        cli.main(argv)
    assert exit.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()             # nothing was written


def test_bad_values_after_parsing_are_refused_before_training(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["sweep", "--dataset", "digits", "--model", "resnet8", "--out", str(out)]) == 2
    assert "unknown model 'resnet8'" in capsys.readouterr().err
    assert cli.main(["sweep", "--dataset", "digits", "--model", "mlp", "--batch-size", "5000", "--steps", "2",
                     "--out", str(out)]) == 2
    assert "batch size 5000 is larger than the training split" in capsys.readouterr().err
    assert not (out / "runs.csv").exists()
    assert cli.main(["sweep", "--dataset", "mnist2d", "--out", str(tmp_path / "never")]) == 2
    assert "unknown dataset 'mnist2d'" in capsys.readouterr().err and not (tmp_path / "never").exists()


def test_protocol_refuses_values_that_cannot_train():
    for bad in (dict(steps=0), dict(batch_size=-1), dict(eval_every=0), dict(lr=0.0), dict(momentum=1.5),
                dict(weight_decay=-1e-4), dict(milestones=(1.5,)), dict(steps=2.5)):
        with pytest.raises(ValueError, match="Protocol"):
            train.Protocol(**bad)


def test_cifar_sweep_end_to_end_on_files_in_the_official_format(tmp_path, capsys):
    from test_data import write_cifar

    write_cifar(tmp_path / "data", "cifar10", n_train=8, n_test=10)
    out = tmp_path / "out"
    argv = ["sweep", "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"), "--model", "resnet20",
            "--losses", "cce,dm", "--noise", "cifar10-map:0.4", "--seeds", "1", "--steps", "3", "--batch-size", "8",
            "--eval-every", "2", "--device", "cpu", "--out", str(out)]
    assert cli.main(argv) == 0, capsys.readouterr().err
    result = rows(out / "runs.csv")
    assert {r["loss"] for r in result} == {"cce", "dm"} and {r["dataset"] for r in result} == {"cifar10"}
    assert {r["model"] for r in result} == {"resnet20"}
    assert all(0 <= float(r["final_test_acc"]) <= 1 for r in result)
    assert {h["step"] for h in rows(out / sweep.HISTORY_FILE)} == {"0", "2", "3"}
    assert cli.main(argv[:3] + argv[5:-1] + [str(tmp_path / "other")]) == 2      # without --data-dir: named
    assert "give the folder that holds them (--data-dir)" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()
