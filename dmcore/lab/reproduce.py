"""Reproduction: re-train a record's runs, or a deterministic sample, and compare them with the record.

:func:`reproduce` compares under this rule:


* **Bitwise** where the arithmetic is the record's: the same CPU model, torch CPU capability,
  kernel path, and torch and numpy versions as the session that trained the run (re-training
  uses the record's thread count). Every number of the run's results and history must then be
  equal, bit for bit. A run trained with others equals the run trained alone on the compiled
  kernel path (tested); the CNNs' PyTorch paths (``forward_stacked``: the MNIST-1D CNN without its
  kernel, the 2-D CNN always) stack the runs in batched matrix products and have no such guarantee,
  so their records are always checked statistically.
* **Statistical** elsewhere, since training is chaotic and another CPU's rounding sends a run on
  another trajectory: a re-trained run is then a new draw from its configuration's distribution.
  Its final and best test accuracy must lie within the range of its configuration's recorded seeds
  widened on each side by ``max(4 * max(s_c, s_book), 0.01)``: ``s_c`` is that configuration's
  sample standard deviation over seeds, and ``s_book`` the median of ``s_c`` over every
  configuration of every record in the folder, a floor for a configuration whose few seeds happen
  to agree (with three seeds, a standard deviation under an eighth of the true one happens about
  once in 65 configurations; one record here, CCE without weight decay at 10:1, drew 0.804-0.811
  where six more seeds spread over 0.737-0.819). A divergence is accepted where a recorded seed of
  that configuration diverged too. Changes smaller than the spread over seeds are caught only by
  the bitwise check.
* In both, the realised noise rate must be the recorded one exactly (label noise is drawn from
  integer seeds, whatever the arithmetic), and the history must have the recorded steps.


``python -m dmcore reproduce NAME --sample K`` runs the check from the command line.
"""

from __future__ import annotations

import math
import pathlib
import random
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from . import data, experiments, sweep, train
from .experiments import EXPERIMENTS, Experiment
from .records import Results, is_cnn, provenance
from .records import folder as records_folder

__all__ = ["reproduce", "Reproduction", "sample_runs"]

_ARITHMETIC = ("cpu", "cpu_capability", "kernel", "threads", "torch", "numpy")   # threads: set from the record


def _same_arithmetic(a: dict, b: dict) -> bool:
    return all(a.get(k) == b.get(k) for k in _ARITHMETIC)


def _bitwise_possible(experiment: Experiment, session: dict, here: dict) -> bool:
    """The record's arithmetic, on a path where a run does not depend on its companions (module docstring)."""
    stacked = experiment.trainer == "train" and experiment.model.startswith(("mnist1d_cnn", "fashion_cnn"))
    stacked_on_torch = stacked and not (is_cnn(experiment.model) and session.get("kernel") == "c")
    return _same_arithmetic(session, here) and not stacked_on_torch



@dataclass
class Reproduction:
    """The outcome of :func:`reproduce`: the mode per run, one row per compared value, and whether
    every run is within the rule."""

    experiment: str
    modes: dict[str, str]
    rows: list[dict]
    seconds: float

    @property
    def passed(self) -> bool:
        return all(r["ok"] for r in self.rows)

    @property
    def failures(self) -> list[dict]:
        return [r for r in self.rows if not r["ok"]]

    def table(self) -> str:
        """The compared values as a fixed-width text table."""
        lines = [f"{'run':<34s} {'mode':<11s} {'metric':<15s} {'recorded':>9s} {'re-trained':>10s} "
                 f"{'difference':>10s} {'allowed':>15s}  ok"]
        for r in self.rows:
            allowed = r["allowed"] if isinstance(r["allowed"], str) else f"[{r['allowed'][0]:.4f}, {r['allowed'][1]:.4f}]"
            lines.append(f"{r['run_id']:<34s} {r['mode']:<11s} {r['metric']:<15s} {r['recorded']:>9.4f} "
                         f"{r['reproduced']:>10.4f} {r['difference']:>10.2e} {allowed:>15s}  {'yes' if r['ok'] else 'NO'}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table() + "\n" + self.summary()

    def summary(self) -> str:
        modes = sorted(set(self.modes.values()))
        verdict = "equal to the record" if self.passed and modes == ["bitwise"] else \
            "within the record's tolerance" if self.passed else f"{len(self.failures)} value(s) outside the tolerance"
        return (f"re-trained {len(self.modes)} runs of {self.experiment!r} ({', '.join(modes)}): {verdict}")


def sample_runs(experiment, k: int | None) -> list[train.Run]:
    """A deterministic sample of ``k`` runs of ``experiment`` (all runs for ``None``), in grid order:
    drawn with Python's ``random.Random`` seeded by the experiment's name."""
    experiment = experiments.get(experiment)
    runs = list(experiment.runs)
    if k is None or k >= len(runs):
        return runs
    if k < 1:
        raise ValueError(f"the sample must hold at least one run, got {k}")
    chosen = set(random.Random(f"reproduce:{experiment.name}").sample(range(len(runs)), k))
    return [r for i, r in enumerate(runs) if i in chosen]


_CHECKED = ("final_test_acc", "best_test_acc")


def _equal(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


def reproduce(experiment, sample: int | None = None, mode: str = "auto", records=None,
              progress: bool | None = None) -> Reproduction:
    """Re-train ``sample`` runs of ``experiment`` (a name, or an :class:`Experiment`, e.g. a deliberately
    changed one; all runs for ``None``) and compare them with its record under the module's rule.

    ``mode``: ``auto`` (bitwise where the arithmetic is the record's, else statistical),
    ``bitwise`` or ``statistical`` for every run. ``progress``: a progress bar with the time left
    (default: when standard error is a terminal)."""
    experiment = experiments.get(experiment)
    if mode not in ("auto", "bitwise", "statistical"):
        raise ValueError(f"mode must be auto, bitwise or statistical, got {mode!r}")
    folder = records_folder(records) / experiment.name
    recorded = Results(experiments.get(experiment.name) if experiment.name in EXPERIMENTS else experiment, folder)
    # the record's thread count, so that bits can match
    here, results, seconds = _retrain(experiment, sample_runs(experiment, sample), progress,
                                      recorded.provenance[0]["threads"])
    spread = {m: (_spread(recorded, m), _book_spread(folder.parent, m)) for m in _CHECKED}
    trained_by = {run_id: s for s in recorded.provenance for run_id in s["runs"]}
    by_id = {r["run_id"]: r for r in recorded.runs}
    modes, rows = {}, []
    for result in results:
        old = by_id[result["run_id"]]
        session = trained_by.get(result["run_id"], {})
        modes[old["run_id"]] = mode if mode != "auto" else "bitwise" if _bitwise_possible(experiment, session, here) \
            else "statistical"
        history = [h for h in recorded.history if h["run_id"] == old["run_id"]]
        compare = _bitwise if modes[old["run_id"]] == "bitwise" else _statistical
        rows += compare(old, history, result, recorded, spread)
    return Reproduction(experiment.name, modes, rows, seconds)


def _row(old: dict, result: dict, mode: str, metric: str, allowed, ok: bool) -> dict:
    return {"run_id": old["run_id"], "mode": mode, "metric": metric, "recorded": old.get(metric, math.nan),
            "reproduced": result.get(metric, math.nan), "difference": result.get(metric, math.nan) - old.get(metric, math.nan),
            "allowed": allowed, "ok": ok}


def _structure(old: dict, history: list[dict], result: dict, mode: str) -> dict:
    """In both modes: the realised noise rate is the recorded one exactly, and the steps are the recorded ones."""
    same_steps = [h["step"] for h in history] == [h["step"] for h in result["history"]]
    ok = _equal(old.get("realised_rate", math.nan), result.get("realised_rate", math.nan)) and same_steps
    return _row(old, result, mode, "realised_rate", "equal", ok)


def _bitwise(old: dict, history: list[dict], result: dict, recorded: Results, spread) -> list[dict]:
    """Every recorded number of the run (history, accuracies, per-class accuracies) equal, bit for bit."""
    unequal = [k for a, b in zip(history, result["history"]) for k in b if k in a and not _equal(a[k], b[k])]
    unequal += [k for k in _CHECKED if not _equal(old[k], result[k])]
    unequal += ["final_class_acc" for a, b in zip(old.get("final_class_acc", []), result.get("final_class_acc", []))
                if not _equal(a, b)]
    first = _structure(old, history, result, "bitwise")
    return [first] + [_row(old, result, "bitwise", m, "bitwise", not unequal and first["ok"]) for m in _CHECKED]


def _statistical(old: dict, history: list[dict], result: dict, recorded: Results, spread) -> list[dict]:
    """The final and best test accuracy within the configuration's recorded seeds, widened (module docstring)."""
    config = _config(old)
    rows = [_structure(old, history, result, "statistical")]
    for metric in _CHECKED:
        seeds = [r[metric] for r in recorded.runs if _config(r) == config]
        finite = [v for v in seeds if not math.isnan(v)]
        per_config, book = spread[metric]
        margin = max(4 * max(per_config.get(config, 0.0), book), 0.01)
        allowed = (min(finite) - margin, max(finite) + margin) if finite else (math.nan, math.nan)
        value = result[metric]
        ok = (len(finite) < len(seeds)) if math.isnan(value) else bool(finite) and allowed[0] <= value <= allowed[1]
        rows.append(_row(old, result, "statistical", metric, allowed, ok))
    return rows


def _retrain(experiment: Experiment, runs: list[train.Run], progress: bool | None, threads: int):
    """Train ``runs`` of ``experiment`` on ``threads`` threads (the caller's count is restored after) with a
    progress bar (steps, time left): this process's :func:`~dmcore.lab.records.provenance`, the results
    and the seconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        here = provenance(experiment.model)
        start = time.perf_counter()
        trainer = experiments.TRAINERS[experiment.trainer]
        with sweep.StepBar(experiment.protocol.steps, progress, f"{len(runs)} runs") as bar:
            results = trainer(experiment.model, data.by_name(experiment.dataset), runs, experiment.protocol,
                              progress=bar.callback())
        return here, results, time.perf_counter() - start
    finally:
        torch.set_num_threads(before)


def _spread(results: Results, metric: str) -> dict[tuple, float]:
    """Each configuration's sample standard deviation over seeds of ``metric`` (diverged runs left out;
    configurations with fewer than two finite runs left out)."""
    groups: dict[tuple, list[float]] = {}
    for r in results.runs:
        if not math.isnan(r[metric]):
            groups.setdefault(_config(r), []).append(r[metric])
    return {k: float(np.std(v, ddof=1)) for k, v in groups.items() if len(v) > 1}


def _config(row: dict) -> tuple:
    """A run's configuration: everything but its seed (the learning rate only where runs set one)."""
    lr = row.get("lr", math.nan)
    return row["loss"], row["noise"], row["rate"], None if isinstance(lr, float) and math.isnan(lr) else lr


def _book_spread(records: pathlib.Path, metric: str) -> float:
    """The median of :func:`_spread` over every configuration of every current record in ``records``."""
    spreads = []
    for e in EXPERIMENTS.values():
        try:
            spreads += _spread(Results(e, records / e.name), metric).values()
        except (FileNotFoundError, ValueError):      # no record of it there, or a stale one: not counted
            continue
    if not spreads:
        raise ValueError(f"no record in {records} has a configuration with two seeds: the statistical rule "
                         "needs a spread over seeds")
    return float(np.median(spreads))

