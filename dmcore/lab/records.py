"""Records: a folder of an experiment's results, with provenance, read as a :class:`Results` view.

A *record* (``<records>/<name>/``) holds what :mod:`dmcore.lab.sweep` writes (``config.json``,
``runs.csv`` with every run's results, ``history.csv.gz`` with every evaluation, numbers exact) and
``provenance.json``: for each session that trained runs, the ``dmcore`` commit, the torch and numpy
versions, the CPU model, torch's CPU capability, the kernel path (``c``: the compiled kernels of
:mod:`dmcore.kernels`; ``torch``: PyTorch's own), the thread count, the date, the wall seconds and
the runs it trained.

The folder of records comes from the caller (:func:`folder`): an argument, the ``--records`` option
of the command line, ``DMCORE_RECORDS``, or the book's ``records`` folder seen from where the caller
runs (the checkout's root or the book's folder), never from where the package lies on disk.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pathlib
import platform
import subprocess
import tomllib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .. import kernels
from . import sweep

if TYPE_CHECKING:
    from .experiments import Experiment

__all__ = ["RULES", "checkpoint", "folder", "provenance", "criteria_file", "criteria_digest", "Stat", "Results", "check_complete", "markdown_table"]

_PACKAGE = pathlib.Path(__file__).resolve().parents[1]   # for the commit of the code that trains


def folder(records=None) -> pathlib.Path:
    """The folder of records: ``records`` if given, else ``DMCORE_RECORDS``, else ``book/records``
    or ``records`` under the current directory (a checkout's root, or the book's folder where the
    chapters run)."""
    if records is not None:
        return pathlib.Path(records)
    if os.environ.get("DMCORE_RECORDS"):
        return pathlib.Path(os.environ["DMCORE_RECORDS"])
    for candidate in (pathlib.Path("book") / "records", pathlib.Path("records")):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("no folder of records: pass one (records=..., --records), set DMCORE_RECORDS, or run "
                            f"from a checkout's root or its book folder (the current directory is {os.getcwd()})")


# --- provenance -------------------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _commit() -> str:
    """The checkout's commit, ``+modified`` where the package or the book's pre-registered criteria
    (``book/criteria``) differ from it."""
    watched = [str(_PACKAGE)] + [str(p) for p in (_PACKAGE.parent / "book" / "criteria",) if p.is_dir()]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_PACKAGE, capture_output=True, text=True, timeout=30)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *watched], cwd=_PACKAGE, capture_output=True,
                               text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + ("+modified" if dirty.stdout.strip() else "")


def _kernel_path(model: str) -> str:
    """``c`` where the compiled kernels run (the CNN's and the EDF losses'), ``torch`` otherwise."""
    return "c" if kernels.cpu() is not None and (not is_cnn(model) or kernels.cnn1d() is not None) else "torch"


def is_cnn(model: str) -> bool:
    """Whether ``model`` is one of the MNIST-1D CNNs (which have a compiled kernel path)."""
    return model.startswith("mnist1d_cnn")


def _criteria_folder(criteria_folder=None) -> pathlib.Path:
    return pathlib.Path(criteria_folder) if criteria_folder is not None else _PACKAGE.parent / "book" / "criteria"


def criteria_file(name: str, criteria_folder=None) -> pathlib.Path | None:
    """The pre-registered criteria of record ``name``: the file of ``criteria_folder`` (default
    ``book/criteria`` in the checkout the package runs from) called ``<name>.toml`` or naming ``name``
    among its ``records`` (one plan for several records, e.g. the cells of a map) and amending no other
    file; None where none does. Its addenda: :func:`criteria_addenda`."""
    folder = _criteria_folder(criteria_folder)
    own = folder / f"{name}.toml"
    if own.is_file():
        return own
    for path in sorted(folder.glob("*.toml")):
        plan = tomllib.loads(path.read_text())
        if name in plan.get("records", []) and "amends" not in plan:
            return path
    return None


def criteria_addenda(name: str, criteria_folder=None) -> list[pathlib.Path]:
    """The addenda to the criteria of record ``name``: files that amend another (``amends = "<file>"``)
    and name ``name`` among their ``records``, in name order. An addendum is committed before the
    training sessions it governs (every session from the first that stores its digest on)."""
    folder = _criteria_folder(criteria_folder)
    found = []
    for path in sorted(folder.glob("*.toml")):
        plan = tomllib.loads(path.read_text())
        if "amends" in plan and name in plan.get("records", []):
            found.append(path)
    return found


def criteria_digest(path) -> str:
    """The SHA-256 of a criteria file's bytes, as a record's provenance stores it."""
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def provenance(model: str = "mnist1d_cnn") -> dict:
    """This process's arithmetic and versions, as a record's provenance stores them."""
    return {"dmcore_commit": _commit(), "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "cpu": _cpu_model(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "kernel": _kernel_path(model),
            "threads": torch.get_num_threads()}



def check_complete(experiment: Experiment, folder: pathlib.Path) -> None:
    """Raise unless ``folder`` holds a record of every run of ``experiment``, in its configuration."""
    if not (folder / "runs.csv").exists():
        raise FileNotFoundError(f"no record of {experiment.name!r} in {folder}; `make experiments` trains it")
    config = json.loads((folder / "config.json").read_text())
    have = {r["run_id"] for r in sweep.read_csv(folder / "runs.csv")}
    want = {r.run_id for r in experiment.runs}
    stale = (config["dataset"], config["model"], config["protocol"]) != (
        experiment.dataset, experiment.model, json.loads(json.dumps(dataclasses.asdict(experiment.protocol))))
    if stale or not want <= have:
        raise ValueError(f"the record of {experiment.name!r} in {folder} does not match its definition "
                         f"({'another configuration' if stale else f'{len(want - have)} runs missing'}); "
                         "`make experiments` regenerates it")



# --- reading: the results view ----------------------------------------------------------------------

#: The checkpoint rules: ``final`` (the last evaluation), ``early`` (early stopping on the noisy
#: validation labels: the evaluation with the highest ``val_acc_noisy``, the first on a tie; no clean
#: label is read) and ``best`` (the highest value of the metric itself over the evaluations: the
#: papers' "best test accuracy", optimistic, since it reads the test set to choose).
RULES = ("final", "early", "best")


def checkpoint(history: list[dict], rule: str, metric: str) -> dict:
    """The evaluation (a row of ``history``, in step order) that ``rule`` picks for ``metric``."""
    if rule not in RULES:
        raise ValueError(f"unknown checkpoint rule {rule!r}: expected one of {', '.join(RULES)}")
    if not history:
        raise ValueError("no evaluations to choose from")
    if rule == "final":
        return history[-1]
    key = "val_acc_noisy" if rule == "early" else metric
    chosen = history[-1]
    best = -math.inf
    for row in history:
        value = row[key]
        if not math.isnan(value) and value > best:
            chosen, best = row, value
    return chosen


@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation, count and 95% interval half-width (Student's t) of a metric
    over runs; NaN mean where a run diverged."""

    mean: float
    std: float
    n: int
    ci95: float

    @classmethod
    def of(cls, values) -> "Stat":
        """The statistics of ``values`` (one number per run, e.g. per seed)."""
        values = [float(v) for v in values]
        n = len(values)
        if n == 0:
            raise ValueError("no runs match")
        mean = sum(values) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
        from scipy.stats import t

        ci = float(t.ppf(0.975, n - 1)) * std / math.sqrt(n) if n > 1 else math.nan
        return cls(mean, std, n, ci)

    def fmt(self, scale: float = 100.0, digits: int = 1, spread: str = "std") -> str:
        """``mean ± std`` (or ``± ci95``) scaled, e.g. ``84.1 ± 2.2``; ``diverged`` for a NaN mean."""
        if math.isnan(self.mean):
            return "diverged"
        width = self.std if spread == "std" else self.ci95
        return f"{scale * self.mean:.{digits}f} ± {scale * width:.{digits}f}"


class Results:
    """The runs of one experiment: rows as :func:`dmcore.lab.sweep.read_results` gives them, selected by
    configuration (``loss``, ``noise``, ``rate``, ``seed``), with statistics over seeds and curves."""

    def __init__(self, experiment: Experiment, folder: pathlib.Path):
        self.experiment, self.folder = experiment, folder
        check_complete(experiment, folder)
        wanted = {r.run_id for r in experiment.runs}
        runs, history = sweep.read_results(folder)
        self.runs = [r for r in runs if r["run_id"] in wanted]
        self.history = [h for h in history if h["run_id"] in wanted]
        self.provenance = json.loads((folder / "provenance.json").read_text())
        self._histories: dict[str, list[dict]] = {}
        for h in sorted(self.history, key=lambda h: h["step"]):
            self._histories.setdefault(h["run_id"], []).append(h)

    def __repr__(self) -> str:
        return f"Results({self.experiment.name}: {len(self.runs)} runs, {len(self.history)} evaluations)"

    def registered(self) -> "Results":
        """The record as its first training session left it: the grid registered with its criteria,
        before any later session widened it (:func:`dmcore.lab.criteria.load` with ``addenda=False``)."""
        first = set(self.provenance[0]["runs"])
        runs = tuple(r for r in self.experiment.runs if r.run_id in first)
        return Results(dataclasses.replace(self.experiment, runs=runs), self.folder)

    def select(self, **match) -> list[dict]:
        """The run rows whose columns equal ``match`` (e.g. ``loss="cce", rate=0.4``)."""
        return [r for r in self.runs if all(r[k] == v for k, v in match.items())]

    def values(self, metric: str, **match) -> list:
        """``metric`` of each matching run, in seed order."""
        return [r[metric] for r in sorted(self.select(**match), key=lambda r: r["seed"])]

    def at(self, metric: str, rule: str = "final", **match) -> list[dict]:
        """For each matching run (seed order), the evaluation that checkpoint ``rule`` picks
        (:func:`checkpoint`) for the history metric ``metric`` (``test_acc``, ``fresh_acc``, ...)."""
        rows = sorted(self.select(**match), key=lambda r: r["seed"])
        return [checkpoint(self._histories[r["run_id"]], rule, metric) for r in rows]

    def stat(self, metric: str, **match) -> Stat:
        """Mean, spread and 95% interval of ``metric`` over the matching runs (the seeds)."""
        return Stat.of(self.values(metric, **match))

    def mean(self, metric: str, **match) -> float:
        return self.stat(metric, **match).mean

    def curve(self, metric: str, **match) -> tuple[np.ndarray, np.ndarray]:
        """Steps and ``metric`` averaged over the matching runs at each step: ``(S,)``, ``(S,)``."""
        ids = {r["run_id"] for r in self.select(**match)}
        if not ids:
            raise ValueError(f"no runs match {match}")
        by_step: dict[int, list[float]] = {}
        for h in self.history:
            if h["run_id"] in ids:
                by_step.setdefault(h["step"], []).append(h[metric])
        steps = sorted(by_step)
        return np.array(steps), np.array([np.mean(by_step[s]) for s in steps])

    def trajectory(self, **match) -> list[dict]:
        """The history rows of the one run that matches, in step order."""
        rows = self.select(**match)
        if len(rows) != 1:
            raise ValueError(f"{len(rows)} runs match {match}, expected one")
        return sorted((h for h in self.history if h["run_id"] == rows[0]["run_id"]), key=lambda h: h["step"])

    def provenance_line(self) -> str:
        """When, where and by which code the record was trained, and how to regenerate it."""
        sessions = self.provenance
        first = sessions[0]
        seconds = sum(s["wall_seconds"] for s in sessions)
        machines = sorted({f"{s['cpu']} ({s['cpu_capability']}, kernel path {s['kernel']}, {s['threads']} threads)"
                           for s in sessions})
        commits = sorted({s["dmcore_commit"][:10] + ("+modified" if s["dmcore_commit"].endswith("+modified") else "")
                          for s in sessions})
        return (f"Record `{self.experiment.name}`: {len(self.runs)} runs trained on {first['date'][:10]} on "
                f"{'; '.join(machines)}, torch {first['torch']}, dmcore {', '.join(commits)}, in {seconds / 60:.1f} min; "
                f"regenerate with `python -m dmcore experiments {self.experiment.name}`.")



def markdown_table(header: list[str], rows: list[list]) -> str:
    """A markdown table; cells are formatted with ``str``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])

