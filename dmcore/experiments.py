"""The book's experiments, each defined once; their committed records, read, written and reproduced.

An :class:`Experiment` names a dataset, a model, a protocol and a grid of runs. Its *record*, a
folder ``book/records/<name>/`` committed with the book, holds what :mod:`dmcore.sweep` writes
(``config.json``, ``runs.csv`` with every run's results, ``history.csv.gz`` with every evaluation,
numbers exact) and ``provenance.json``: for each session that trained runs, the ``dmcore`` commit,
the torch and numpy versions, the CPU model, torch's CPU capability, the kernel path (``c``: the
compiled kernels of :mod:`dmcore.kernels`; ``torch``: PyTorch's own), the thread count, the date,
the wall seconds and the runs it trained.

The chapters render from the records (:func:`load` returns a :class:`Results` view), so a chapter's
tables, figures and claims are the same on every machine; the code that made them is checked by
:func:`reproduce`, which re-trains all runs of an experiment, or a deterministic sample, and
compares them with the record under this rule:

* **Bitwise** where the arithmetic is the record's: the same CPU model, torch CPU capability,
  kernel path, and torch and numpy versions as the session that trained the run (re-training
  uses the record's thread count). Every number of the run's results and history must then be
  equal, bit for bit. A run trained with others equals the run trained alone on the compiled
  kernel path (tested); the CNN's PyTorch path stacks the runs in batched matrix products and has
  no such guarantee, so CNN records made on that path are always checked statistically.
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

``python -m dmcore experiments`` trains every record (resumable) into ``_build/records`` and
installs each finished one into ``book/records``; ``python -m dmcore reproduce NAME --sample K``
checks one. Setting ``DMCORE_RETRAIN=1`` makes :func:`load` train the experiment afresh (into
``_build/records``, resumable) and read that instead of the committed record: the switch that
regenerates a chapter from scratch. ``DMCORE_RECORDS`` points :func:`load` at another folder of
records.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import pathlib
import platform
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from . import alignment, kernels, sweep, train

__all__ = ["Experiment", "EXPERIMENTS", "get", "RECORDS", "SCRATCH", "run", "install", "load", "Results",
           "Stat", "provenance", "reproduce", "Reproduction", "markdown_table"]

_ROOT = pathlib.Path(__file__).resolve().parents[1]
#: Where the committed records are (``DMCORE_RECORDS`` overrides).
RECORDS = pathlib.Path(os.environ.get("DMCORE_RECORDS") or _ROOT / "book" / "records")
#: Where :func:`run` trains (resumable) before a record is installed.
SCRATCH = _ROOT / "_build" / "records"
_TRAINERS = {"train": train.train_runs, "alignment": alignment.train_runs}
_CHUNK = 75   # runs trained together: the fastest per run on 2 cores (README), and a resumable unit


@dataclass(frozen=True)
class Experiment:
    """One experiment of the book: a grid of runs of one model on one dataset under one protocol.

    ``sample`` is the number of runs a chapter re-trains to show that the code still reproduces the
    record (:func:`reproduce`); ``trainer`` is ``train`` (:func:`dmcore.train.train_runs`) or
    ``alignment`` (:func:`dmcore.alignment.train_runs`)."""

    name: str
    chapter: str
    description: str
    dataset: str
    model: str
    protocol: train.Protocol
    runs: tuple[train.Run, ...]
    sample: int = 4
    trainer: str = "train"

    @property
    def seeds(self) -> list[int]:
        return sorted({r.seed for r in self.runs})

    @property
    def losses(self) -> list[str]:
        return list(dict.fromkeys(r.loss for r in self.runs))

    def __repr__(self) -> str:
        settings = len({(r.noise, r.rate) for r in self.runs})
        rates = {r.lr for r in self.runs if r.lr is not None}
        return (f"Experiment({self.name}: {len(self.runs)} runs of {self.model} on {self.dataset}, "
                f"{len(self.losses)} losses x {settings} noise settings"
                + (f" x {len(rates)} learning rates" if rates else "")
                + f" x {len(self.seeds)} seeds, {self.protocol.steps} steps)")


def _grid(losses, settings, seeds) -> tuple[train.Run, ...]:
    return tuple(sweep.grid(list(losses), list(settings), seeds))


NATURAL = ("cce", "mae", "mse", "gce", "imae", "dm")
NORMALISED = ("cce-dn", "mae-dn", "mse-dn", "gce-dn")
DM_GRID = ("dm:lam=0,beta=0",) + tuple(f"dm:lam={lam:g},beta={beta:g}" for lam in (0, 0.5, 1, 2) for beta in (4, 8, 16, 32))
IMBALANCE = ("cce", "mae", "gce", "imae", "dm", "dm:lam=0.3,beta=6.5")
_NO_DECAY = train.Protocol(weight_decay=0.0)
#: The learning rates every loss is tuned over (0.05 is the book's common default).
TUNING_LRS = (0.01, 0.05, 0.2)
#: Each loss's own settings in the tuning grid, its common default first: the papers' setting and one
#: alternative (derivative normalisation for the losses without a parameter).
TUNING = {"cce": ("cce", "cce-dn"), "mae": ("mae", "mae-dn"), "gce": ("gce", "gce:q=0.4"),
          "imae": ("imae", "imae:T=4"), "dm": ("dm", "dm:lam=2,beta=8"), "sce": ("sce", "sce:alpha=1,beta=1"),
          "nce+rce": ("nce+rce", "nce+rce:alpha=1,beta=100"), "poly1": ("poly1", "poly1:epsilon=2")}
TUNING_NOISE = (("symmetric", (0.0, 0.4, 0.6)), ("pair", (0.4,)))
#: The other emphasis density functions of the DM paper, two settings each.
EDF_FAMILIES = ("normal:psi=0.25,beta=8", "normal:psi=0.75,beta=8", "exponential:beta=2", "exponential:beta=-2",
                "beta:alpha=2,eta=3", "beta:alpha=4,eta=2")
#: The losses of the scale experiments, each at its default.
SCALE = ("cce", "gce", "imae", "dm", "sce", "nce+rce", "poly1")
_SCALE_NOISE = [("symmetric", [0.4, 0.6, 0.8]), ("mnist-map", [0.4])]


def _tuning_grid(seeds: int) -> tuple[train.Run, ...]:
    """Every loss's settings at every learning rate, learning rates outermost (runs that share one
    train together), then loss, setting, noise, seed."""
    return tuple(train.Run(loss, scheme, rate, seed, lr) for lr in TUNING_LRS for settings in TUNING.values()
                 for loss in settings for scheme, rates in TUNING_NOISE for rate in rates for seed in range(seeds))


def _define() -> dict[str, Experiment]:
    mnist, cnn = "mnist1d", "mnist1d_cnn"
    label_noise = [("symmetric", [0.0, 0.2, 0.4, 0.6, 0.8]), ("pair", [0.2, 0.4])]
    experiments = [
        Experiment("label-noise", "label_noise", "ten weighting schemes under symmetric and pair noise",
                   mnist, cnn, train.Protocol(), _grid(NATURAL + NORMALISED, label_noise, 3)),
        Experiment("label-noise-digits", "label_noise", "the natural losses on sklearn's digits with an MLP",
                   "digits", "mlp", train.Protocol(steps=2000, eval_every=100),
                   _grid(NATURAL, [("symmetric", [0.0, 0.4, 0.6])], 3)),
        Experiment("emphasis", "emphasis_mode_spread", "DM's (lambda, beta) grid with a noisy validation split",
                   "mnist1d-val0.2", cnn, train.Protocol(steps=3000), _grid(DM_GRID, [("symmetric", [0.0, 0.2, 0.4, 0.6])], 2)),
        Experiment("eps-objective", "reviewers_questions", "DM with and without the papers' eps, beside CCE",
                   mnist, cnn, train.Protocol(), _grid(["cce", "dm", "dm:eps=0"], [("symmetric", [0.0])], 3), sample=2),
        Experiment("eps-objective-no-decay", "reviewers_questions", "the same without weight decay",
                   mnist, cnn, _NO_DECAY, _grid(["cce", "dm", "dm:eps=0"], [("symmetric", [0.0])], 3), sample=2),
        Experiment("alignment", "reviewers_questions", "p and the gradients' directions along a trajectory",
                   mnist, cnn, train.Protocol(steps=3000), _grid(["cce", "dm"], [("symmetric", [0.4])], 3),
                   sample=1, trainer="alignment"),
        Experiment("class-noise", "reviewers_questions", "class-dependent noise (the MNIST map of Patrini et al.)",
                   mnist, cnn, train.Protocol(), _grid(["cce", "gce", "imae", "dm"], [("mnist-map", [0.2, 0.4, 0.6])], 2), sample=2),
    ]
    experiments += [
        Experiment("label-noise-tuned", "label_noise",
                   "eight losses, each tuned over 3 learning rates x 2 settings of its own on noisy validation labels",
                   "mnist1d-val0.2", cnn, train.Protocol(steps=3000), _tuning_grid(5)),
        Experiment("edf-families", "emphasis_mode_spread", "the normal, exponential and beta-density EDFs, trained",
                   "mnist1d-val0.2", cnn, train.Protocol(steps=3000),
                   _grid(EDF_FAMILIES, [("symmetric", [0.0, 0.4])], 5), sample=2),
        Experiment("scale-4k", "scale", "the wider CNN (48 channels) on the 4000 canonical training sequences",
                   mnist, "mnist1d_cnn_w48", train.Protocol(), _grid(SCALE, _SCALE_NOISE, 3), sample=2),
        Experiment("scale-40k", "scale", "the wider CNN on 40,000 training sequences, 50 epochs",
                   "mnist1d-40k", "mnist1d_cnn_w48", train.Protocol(steps=20000, eval_every=1000),
                   _grid(SCALE, _SCALE_NOISE, 3), sample=1),
    ]
    for ratio in (10, 50):
        experiments += [
            Experiment(f"imbalance-lt{ratio}", "class_imbalance", f"long-tailed MNIST-1D, ratio {ratio}",
                       f"mnist1d-lt{ratio}", cnn, train.Protocol(), _grid(IMBALANCE, [("symmetric", [0.0])], 3), sample=3),
            Experiment(f"imbalance-lt{ratio}-no-decay", "class_imbalance",
                       f"CCE without weight decay on long-tailed MNIST-1D, ratio {ratio}",
                       f"mnist1d-lt{ratio}", cnn, _NO_DECAY, _grid(["cce"], [("symmetric", [0.0])], 3), sample=1),
        ]
    return {e.name: e for e in experiments}


#: Every experiment of the book, by name.
EXPERIMENTS: dict[str, Experiment] = _define()


def get(name: str) -> Experiment:
    """The experiment called ``name``."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}: expected one of {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def _as_experiment(experiment) -> Experiment:
    return experiment if isinstance(experiment, Experiment) else get(experiment)


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
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_ROOT, capture_output=True, text=True, timeout=30)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "dmcore"], cwd=_ROOT, capture_output=True,
                               text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + ("+modified" if dirty.stdout.strip() else "")


def _kernel_path(model: str) -> str:
    """``c`` where the compiled kernels run (the CNN's and the EDF losses'), ``torch`` otherwise."""
    return "c" if kernels.cpu() is not None and (not _is_cnn(model) or kernels.cnn1d() is not None) else "torch"


def _is_cnn(model: str) -> bool:
    return model.startswith("mnist1d_cnn")


def provenance(model: str = "mnist1d_cnn") -> dict:
    """This process's arithmetic and versions, as a record's provenance stores them."""
    return {"dmcore_commit": _commit(), "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "cpu": _cpu_model(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "kernel": _kernel_path(model),
            "threads": torch.get_num_threads()}


_ARITHMETIC = ("cpu", "cpu_capability", "kernel", "threads", "torch", "numpy")   # threads: set from the record


def _same_arithmetic(a: dict, b: dict) -> bool:
    return all(a.get(k) == b.get(k) for k in _ARITHMETIC)


def _bitwise_possible(experiment: Experiment, session: dict, here: dict) -> bool:
    """The record's arithmetic, on a path where a run does not depend on its companions (module docstring)."""
    stacked_cnn_on_torch = experiment.trainer == "train" and _is_cnn(experiment.model) and session.get("kernel") != "c"
    return _same_arithmetic(session, here) and not stacked_cnn_on_torch


# --- training and installing records --------------------------------------------------------------

def run(experiment, out=None, progress: bool | None = None) -> pathlib.Path:
    """Train the runs of ``experiment`` missing from ``out/<name>`` (default under :data:`SCRATCH`),
    resumably, and add this session's provenance, taken when it starts. The session claims every run
    of the record that no earlier session claims (so runs of an interrupted session are claimed by
    the one that completes it). Returns the record's folder."""
    experiment = _as_experiment(experiment)
    folder = pathlib.Path(out or SCRATCH) / experiment.name
    here, started, start = provenance(experiment.model), datetime.datetime.now(datetime.timezone.utc), time.perf_counter()
    sweep.run_sweep(folder, experiment.dataset, experiment.model, list(experiment.runs), experiment.protocol,
                    chunk=_CHUNK, progress=progress, trainer=_TRAINERS[experiment.trainer])
    path = folder / "provenance.json"
    sessions = json.loads(path.read_text()) if path.exists() else []
    claimed = {run_id for s in sessions for run_id in s["runs"]}
    new = [r["run_id"] for r in sweep._read_csv(folder / "runs.csv") if r["run_id"] not in claimed]
    if new:
        sessions.append({**here, "date": started.strftime("%Y-%m-%d %H:%M UTC"),
                         "wall_seconds": round(time.perf_counter() - start, 1), "runs": new})
        scratch = path.with_name(path.name + ".partial")
        scratch.write_text(json.dumps(sessions, indent=1) + "\n")
        os.replace(scratch, path)
    return folder


def install(experiment, source=None, target=None) -> pathlib.Path:
    """Copy a complete record from ``source`` (default :data:`SCRATCH`) into ``target`` (default
    :data:`RECORDS`), replacing the record there."""
    experiment = _as_experiment(experiment)
    src = pathlib.Path(source or SCRATCH) / experiment.name
    _check_complete(experiment, src)
    dst = pathlib.Path(target or RECORDS) / experiment.name
    staging = dst.with_name(dst.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in ("config.json", "runs.csv", sweep.HISTORY_FILE, "provenance.json"):
        shutil.copy2(src / name, staging / name)
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(staging, dst)
    return dst


def _check_complete(experiment: Experiment, folder: pathlib.Path) -> None:
    if not (folder / "runs.csv").exists():
        raise FileNotFoundError(f"no record of {experiment.name!r} in {folder}; `make experiments` trains it")
    config = json.loads((folder / "config.json").read_text())
    have = {r["run_id"] for r in sweep._read_csv(folder / "runs.csv")}
    want = {r.run_id for r in experiment.runs}
    stale = (config["dataset"], config["model"], config["protocol"]) != (
        experiment.dataset, experiment.model, json.loads(json.dumps(dataclasses.asdict(experiment.protocol))))
    if stale or not want <= have:
        raise ValueError(f"the record of {experiment.name!r} in {folder} does not match its definition "
                         f"({'another configuration' if stale else f'{len(want - have)} runs missing'}); "
                         "`make experiments` regenerates it")


# --- reading: the results view ----------------------------------------------------------------------

@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation, count and 95% interval half-width (Student's t) of a metric
    over runs; NaN mean where a run diverged."""

    mean: float
    std: float
    n: int
    ci95: float

    def fmt(self, scale: float = 100.0, digits: int = 1, spread: str = "std") -> str:
        """``mean ± std`` (or ``± ci95``) scaled, e.g. ``84.1 ± 2.2``; ``diverged`` for a NaN mean."""
        if math.isnan(self.mean):
            return "diverged"
        width = self.std if spread == "std" else self.ci95
        return f"{scale * self.mean:.{digits}f} ± {scale * width:.{digits}f}"


def _stat(values) -> Stat:
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        raise ValueError("no runs match")
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    from scipy.stats import t

    ci = float(t.ppf(0.975, n - 1)) * std / math.sqrt(n) if n > 1 else math.nan
    return Stat(mean, std, n, ci)


class Results:
    """The runs of one experiment: rows as :func:`dmcore.sweep.read_results` gives them, selected by
    configuration (``loss``, ``noise``, ``rate``, ``seed``), with statistics over seeds and curves."""

    def __init__(self, experiment: Experiment, folder: pathlib.Path):
        self.experiment, self.folder = experiment, folder
        _check_complete(experiment, folder)
        wanted = {r.run_id for r in experiment.runs}
        runs, history = sweep.read_results(folder)
        self.runs = [r for r in runs if r["run_id"] in wanted]
        self.history = [h for h in history if h["run_id"] in wanted]
        self.provenance = json.loads((folder / "provenance.json").read_text())

    def __repr__(self) -> str:
        return f"Results({self.experiment.name}: {len(self.runs)} runs, {len(self.history)} evaluations)"

    def select(self, **match) -> list[dict]:
        """The run rows whose columns equal ``match`` (e.g. ``loss="cce", rate=0.4``)."""
        return [r for r in self.runs if all(r[k] == v for k, v in match.items())]

    def values(self, metric: str, **match) -> list:
        """``metric`` of each matching run, in seed order."""
        return [r[metric] for r in sorted(self.select(**match), key=lambda r: r["seed"])]

    def stat(self, metric: str, **match) -> Stat:
        """Mean, spread and 95% interval of ``metric`` over the matching runs (the seeds)."""
        return _stat(self.values(metric, **match))

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


def load(experiment) -> Results:
    """The record of ``experiment`` as a :class:`Results` view. With ``DMCORE_RETRAIN=1`` in the
    environment the experiment is trained afresh into :data:`SCRATCH` (resumable) and read there."""
    experiment = _as_experiment(experiment)
    if os.environ.get("DMCORE_RETRAIN", "0") not in ("", "0"):
        return Results(experiment, run(experiment, progress=False))
    return Results(experiment, RECORDS / experiment.name)


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A markdown table; cells are formatted with ``str``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


# --- reproduction -------------------------------------------------------------------------------------

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
    experiment = _as_experiment(experiment)
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
    experiment = _as_experiment(experiment)
    if mode not in ("auto", "bitwise", "statistical"):
        raise ValueError(f"mode must be auto, bitwise or statistical, got {mode!r}")
    folder = pathlib.Path(records or RECORDS) / experiment.name
    recorded = Results(get(experiment.name) if experiment.name in EXPERIMENTS else experiment, folder)
    runs = sample_runs(experiment, sample)
    trained_by = {run_id: s for s in recorded.provenance for run_id in s["runs"]}
    threads = torch.get_num_threads()
    torch.set_num_threads(recorded.provenance[0]["threads"])    # the record's, so that bits can match
    try:
        here = provenance(experiment.model)
        results, seconds = _retrain(experiment, runs, progress)
    finally:
        torch.set_num_threads(threads)

    spread = {m: (_spread(recorded, m), _book_spread(folder.parent, m)) for m in _CHECKED}
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


def _retrain(experiment: Experiment, runs: list[train.Run], progress: bool | None):
    """Train ``runs`` of ``experiment`` with a progress bar (steps, time left); results and seconds."""
    start = time.perf_counter()
    show = sys.stderr.isatty() if progress is None else progress
    from tqdm import tqdm

    with tqdm(total=experiment.protocol.steps, disable=not show, unit="step", desc=f"{len(runs)} runs") as bar:
        last = [0]

        def advance(step):
            bar.update(step - last[0])
            last[0] = step

        results = _TRAINERS[experiment.trainer](experiment.model, sweep.load_dataset(experiment.dataset), runs,
                                               experiment.protocol, progress=advance)
    return results, time.perf_counter() - start


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
