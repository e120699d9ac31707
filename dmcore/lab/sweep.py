"""Sweeps: a grid of runs trained in batched chunks, with tidy CSV results that survive interruption.

A sweep directory holds

- ``config.json``: the full configuration (dataset, model, protocol, device, the grid, versions);
- ``runs.csv``: one row per finished run: its configuration, realised noise rate, the step at which
  it diverged (empty if it did not), best and final test accuracy, its final metrics, and each
  class's final test accuracy (``final_class_acc``, space-separated);
- ``history.csv.gz``: one row per run and evaluation step, with every metric of :mod:`dmcore.lab.train`.

Numbers are written exactly (Python's shortest round-trip form), so a run read back is the run
trained, bit for bit; the gzip stream carries no time stamp, so equal results give equal files.
Both files are rewritten atomically (written beside, then renamed) after each chunk of runs, so
an interrupted sweep leaves complete files of the chunks that finished. Rerunning the same command
skips finished runs; a directory that holds a sweep with another configuration is refused.

    python -m dmcore sweep --dataset mnist1d --losses cce,mae,gce,imae,dm \\
        --noise symmetric:0,0.2,0.4,0.6,0.8 --seeds 3 --out results/mnist1d
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
import pathlib
import sys
from dataclasses import asdict

import torch

from . import data, train

__all__ = ["grid", "run_sweep", "read_csv", "read_results"]

RUN_COLUMNS = ["run_id", "dataset", "model", "loss", "noise", "rate", "lr", "seed", "realised_rate", "diverged_step",
               "best_test_acc", "final_test_acc", "fit_clean", "fit_noisy", "noisy_to_true", "p_clean", "p_noisy",
               "weight_mean", "weight_var", "logit_range", "val_acc", "val_acc_noisy", "val_noise_est", "test_ece",
               "final_class_acc"]
HISTORY_FILE = "history.csv.gz"
HISTORY_COLUMNS = ["run_id", "step", "test_acc", "fit_clean", "fit_noisy", "noisy_to_true", "p_clean", "p_noisy",
                   "weight_mean", "weight_var", "logit_range", "val_acc", "val_acc_noisy", "val_noise_est", "test_ece"]



def grid(losses: list[str], noise: list[tuple[str, list[float]]], seeds: int) -> list[train.Run]:
    """Every (loss, noise scheme and rate, seed) combination, losses outermost."""
    return [train.Run(loss, scheme, rate, seed) for loss in losses for scheme, rates in noise
            for rate in rates for seed in range(seeds)]


def _format(value) -> str:
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return " ".join(repr(float(v)) for v in value)
    return "" if value is None else str(value)


def _write_csv(path: pathlib.Path, columns: list[str], rows: list[dict]) -> None:
    """``rows`` as CSV at ``path`` (gzip-compressed where the name ends in ``.gz``), atomically."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _format(v) for k, v in row.items()})
    data = text.getvalue().encode()
    if path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=9, mtime=0)
    write_atomically(path, data)


def write_atomically(path: pathlib.Path, data: bytes | str) -> None:
    """``data`` at ``path``, written beside it (``<name>.partial``) and renamed: an interruption leaves
    the old file or the new one, whole."""
    scratch = path.with_name(path.name + ".partial")
    scratch.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(scratch, path)


def read_csv(path: pathlib.Path) -> list[dict]:
    if not path.exists():
        return []
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as f:
        return list(csv.DictReader(f))


def _columns(rows: list[dict], first: list[str]) -> list[str]:
    """The keys of ``rows``: those in ``first`` in its order, then the others in order of appearance."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    return [k for k in first if k in keys] + [k for k in keys if k not in first]


class StepBar:
    """A progress bar over training steps (tqdm, with the time left), shown where ``show`` is true
    (``None``: when standard error is a terminal). :meth:`callback` gives a fresh ``progress(step)``
    function for each trainer call, whose steps count from zero again."""

    def __init__(self, total: int, show: bool | None, desc: str):
        from tqdm import tqdm

        self._bar = tqdm(total=total, disable=not (sys.stderr.isatty() if show is None else show), unit="step",
                         desc=desc)

    def __enter__(self) -> "StepBar":
        return self

    def __exit__(self, *exc) -> None:
        self._bar.close()

    def callback(self):
        last = [0]

        def advance(step: int) -> None:
            self._bar.update(step - last[0])
            last[0] = step

        return advance


def run_sweep(out, dataset: str, model: str, runs: list[train.Run], protocol: train.Protocol,
              device: str = "cpu", chunk: int = 0, progress: bool | None = None, trainer=None,
              data_dir=None) -> list[dict]:
    """Train the runs of ``runs`` not yet in ``out/runs.csv``, ``chunk`` at a time (0: all at once).

    Returns the rows of ``runs.csv``. ``progress``: show a progress bar (default: when standard
    error is a terminal). ``trainer``: the function that trains a chunk, with the signature and
    results of :func:`dmcore.lab.train.train_runs` (the default). ``data_dir``: where a dataset read from
    files is (:func:`dmcore.lab.data.by_name`).
    """
    out = pathlib.Path(out)
    _write_config(out, {"dataset": dataset, "model": model, "device": device, "protocol": asdict(protocol),
                        "runs": [r.run_id for r in runs], "torch": torch.__version__})
    done_rows = read_csv(out / "runs.csv")
    history_rows = read_csv(out / HISTORY_FILE)
    done = {row["run_id"] for row in done_rows}
    pending = [r for r in runs if r.run_id not in done]
    if not pending:
        return done_rows
    ds = data.by_name(dataset, data_dir)
    trainer = trainer or train.train_runs
    size = chunk or len(pending)
    chunks = [pending[i:i + size] for i in range(0, len(pending), size)]
    with StepBar(len(chunks) * protocol.steps, progress, f"{len(pending)} runs") as bar:
        for part in chunks:
            for result in trainer(model, ds, part, protocol, device=device, progress=bar.callback()):
                done_rows.append(_run_row(result))
                history_rows.extend({"run_id": result["run_id"], **h} for h in result["history"])
            _write_csv(out / HISTORY_FILE, _columns(history_rows, HISTORY_COLUMNS), history_rows)
            _write_csv(out / "runs.csv", _columns(done_rows, RUN_COLUMNS), done_rows)
    return read_csv(out / "runs.csv")


def _write_config(out: pathlib.Path, config: dict) -> None:
    """``out/config.json``, with the runs of the sweep already there; a directory that holds a sweep of
    another dataset, model or protocol is refused."""
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "config.json"
    if config_path.exists():
        previous = json.loads(config_path.read_text())
        keys = ("dataset", "model", "protocol")
        if any(previous.get(k) != json.loads(json.dumps(config[k])) for k in keys):
            raise ValueError(f"{out} holds a sweep with another configuration ({config_path}); choose another --out")
        config["runs"] = sorted(set(previous["runs"]) | set(config["runs"]))
    write_atomically(config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")


def _run_row(result: dict) -> dict:
    """A trained run's row of ``runs.csv``: its results and the metrics of its last evaluation."""
    final = result["history"][-1]
    extra = [k for k in result if k not in RUN_COLUMNS and k != "history"]
    return {**{k: result[k] for k in RUN_COLUMNS + extra if k in result},
            **{k: final[k] for k in RUN_COLUMNS if k in final}}


_TEXT_COLUMNS = {"run_id", "dataset", "model", "loss", "noise"}


def _value(key: str, text: str):
    if key in _TEXT_COLUMNS:
        return text
    if key in ("seed", "step"):
        return int(text)
    if key == "final_class_acc":
        return [float(v) for v in text.split()]
    return float(text) if text not in ("", "nan") else math.nan


def read_results(out) -> tuple[list[dict], list[dict]]:
    """``runs.csv`` and ``history.csv.gz`` of the sweep in ``out``, numbers as floats (NaN where a
    metric is undefined, e.g. the noisy-subset fit of a clean run), ``seed``/``step`` as ints and
    ``final_class_acc`` as a list of floats."""
    out = pathlib.Path(out)
    if not (out / "runs.csv").exists():
        raise FileNotFoundError(f"no finished runs in {out}: {out / 'runs.csv'} does not exist")
    return tuple([{k: _value(k, v) for k, v in row.items()} for row in read_csv(out / name)]
                 for name in ("runs.csv", HISTORY_FILE))
