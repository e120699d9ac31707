"""The sweep: tidy CSV files, resuming, interruption, refusal of a mismatched directory, the CLI."""

import json
import subprocess
import sys

import pytest
import torch

from dmcore import cli, sweep, train

TINY = train.Protocol(steps=20, batch_size=50, eval_every=10)


def rows(path):
    return sweep._read_csv(path)


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


def test_results_read_back_as_numbers_and_summarise_over_seeds(tmp_path):
    runs = sweep.grid(["cce", "gce"], [("symmetric", [0.0, 0.4])], seeds=2)
    sweep.run_sweep(tmp_path, "digits", "mlp", runs, TINY)
    table, history = sweep.read_results(tmp_path)
    assert len(table) == 8 and len(history) == 8 * 3
    clean = [r for r in table if r["rate"] == 0.0]
    assert all(r["fit_noisy"] != r["fit_noisy"] for r in clean)           # NaN: no noisy examples
    assert {h["step"] for h in history} == {0, 10, 20} and isinstance(table[0]["seed"], int)
    summary = sweep.summarise(table, "best_test_acc")
    assert set(summary) == {(loss, "symmetric", rate) for loss in ("cce", "gce") for rate in (0.0, 0.4)}
    values = [r["best_test_acc"] for r in table if r["loss"] == "gce" and r["rate"] == 0.4]
    mean, std, count = summary["gce", "symmetric", 0.4]
    assert count == 2 and mean == pytest.approx(sum(values) / 2)
    assert std == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)
    with pytest.raises(FileNotFoundError, match="no finished runs"):
        sweep.read_results(tmp_path / "elsewhere")


def test_dataset_names():
    lt = sweep.load_dataset("digits-lt5")
    counts = torch.bincount(lt.y_train)
    assert counts[9] == round(int(counts[0]) / 5) and lt.x_val is None
    both = sweep.load_dataset("digits-lt5-val0.2")
    assert len(both.y_train) + len(both.y_val) == len(lt.y_train)
    assert sweep.load_dataset("mnist1d-2k-val0.5").name == "mnist1d-2k-val0.5"
    with pytest.raises(ValueError, match="dataset cifar10 is read from files: give the folder"):
        sweep.load_dataset("cifar10")
    for bad in ("cifar5", "digits-val", "digits-val0.2-lt5", "digits-40k", "mnist1d-0k"):
        with pytest.raises(ValueError, match="unknown dataset"):
            sweep.load_dataset(bad)
