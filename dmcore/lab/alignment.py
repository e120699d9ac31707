"""Which examples a loss emphasises along a training trajectory, and where its gradient points.

The reviewers' questions 2 and 3 (chapter "The reviewers' questions") ask whether ``p`` tells clean
from noisy examples early in training, and whether DM's gradient is closer to the gradient of the
clean data than CCE's. :func:`train_runs` answers both on MNIST-1D: each run trains one CNN with
its own loss (CCE or DM) under the protocol's SGD, and at each of :data:`CHECKPOINTS` records, on
the whole training set with its noisy labels,

- ``auc``: the probability that a clean example's ``p`` is above a noisy example's (Mann-Whitney,
  ties counted half; 0.5 is uninformative);
- ``easy_weight``, ``easy_clean``: DM's weight ``w(p)`` (``lam = 0.5, beta = 8``) over its mean,
  averaged over the 10% of examples with the highest ``p``, and the fraction of those that are clean;
  ``clean_weight``, ``noisy_weight``: the same average over the clean and over the noisy examples;
- ``cos_cce``, ``cos_dm``: the cosine between the full-data gradient (w.r.t. the parameters) of CCE,
  and of DM, on the noisy labels, and the gradient of CCE on the clean examples with their true
  labels; ``clean_norm``: the length of that clean-data gradient;
- ``test_acc``.

Its results have the form of :func:`dmcore.lab.train.train_runs`'s, so :mod:`dmcore.lab.sweep` records them.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .. import losses
from . import models, noise, train
from .data import Dataset

__all__ = ["CHECKPOINTS", "auc", "train_runs"]

#: The steps at which a trajectory is measured, for the 3000-step protocol.
CHECKPOINTS = (0, 25, 50, 100, 200, 400, 800, 1600, 3000)


def auc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """P(a positive scores above a negative), ties counted half (the Mann-Whitney statistic)."""
    scores = torch.cat([positive, negative]).double()
    ranks = torch.empty_like(scores)
    ranks[scores.argsort()] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    values, inverse, counts = torch.unique(scores, return_inverse=True, return_counts=True)
    ranks = (torch.zeros(len(values), dtype=torch.float64).index_add_(0, inverse, ranks) / counts)[inverse]
    n, m = len(positive), len(negative)
    return ((ranks[:n].sum() - n * (n + 1) / 2) / (n * m)).item()


def _gradient(model, loss_fn, x, y) -> torch.Tensor:
    grads = torch.autograd.grad(loss_fn(model(x), y), list(model.parameters()))
    return torch.cat([g.flatten() for g in grads])


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a @ b / (a.norm() * b.norm())).item()


def _measure(model, dataset: Dataset, observed, is_noisy) -> dict:
    cce, dm = nn.CrossEntropyLoss(), losses.DMLoss()              # DM at its defaults
    weight = dm.edf
    clean = ~is_noisy
    with torch.no_grad():
        p = model(dataset.x_train).softmax(1).gather(1, observed[:, None]).squeeze(1)
        test_acc = (model(dataset.x_test).argmax(1) == dataset.y_test).float().mean().item()
    relative = weight(p.double()) / weight(p.double()).mean()     # DM's weight over its mean, as normalised
    easy = p >= p.quantile(0.9)
    g_clean = _gradient(model, cce, dataset.x_train[clean], dataset.y_train[clean])
    return {"test_acc": test_acc, "auc": auc(p[clean], p[is_noisy]),
            "easy_weight": relative[easy].mean().item(), "easy_clean": clean[easy].float().mean().item(),
            "clean_weight": relative[clean].mean().item(), "noisy_weight": relative[is_noisy].mean().item(),
            "cos_cce": _cosine(_gradient(model, cce, dataset.x_train, observed), g_clean),
            "cos_dm": _cosine(_gradient(model, dm, dataset.x_train, observed), g_clean),
            "clean_norm": g_clean.norm().item()}


def _trajectory(dataset: Dataset, run: train.Run, noisy, protocol: train.Protocol, progress=None) -> list[dict]:
    observed, is_noisy = noisy.labels, noisy.noise_mask
    torch.manual_seed(run.seed)
    model = models.MNIST1DCNN(dataset.num_classes)
    opt, sched = protocol.optimiser(model.parameters())
    order = torch.Generator().manual_seed(10_000 + run.seed)
    loss_fn = nn.CrossEntropyLoss() if run.loss == "cce" else losses.DMLoss()
    history, step = [], 0
    while True:
        for batch in torch.randperm(len(observed), generator=order).split(protocol.batch_size):
            if step in CHECKPOINTS or step == protocol.steps:
                history.append({"step": step, **_measure(model, dataset, observed, is_noisy)})
            if step == protocol.steps:
                return history
            opt.zero_grad()
            loss_fn(model(dataset.x_train[batch]), observed[batch]).backward()
            opt.step()
            sched.step()
            step += 1
            if progress is not None:
                progress(step)


def train_runs(model: str, dataset: Dataset, runs: list[train.Run], protocol: train.Protocol = train.Protocol(),
               device: str = "cpu", progress=None) -> list[dict]:
    """One trajectory per run, measured at :data:`CHECKPOINTS`; results as :func:`dmcore.lab.train.train_runs`."""
    if model != "mnist1d_cnn" or torch.device(device).type != "cpu":
        raise ValueError(f"alignment runs train the MNIST-1D CNN on the CPU, got {model!r} on {device!r}")
    if any(run.loss not in ("cce", "dm") for run in runs):
        raise ValueError(f"an alignment run trains with cce or dm, got {[run.loss for run in runs]}")
    results = []
    for i, run in enumerate(runs):
        noisy = noise.by_name(dataset.y_train, run.noise, run.rate, dataset.num_classes, run.seed)
        advance = train.progress_part(progress, i, len(runs), protocol.steps)
        history = _trajectory(dataset, run, noisy, protocol, advance)
        results.append({"loss": run.loss, "noise": run.noise, "rate": run.rate, "seed": run.seed,
                        "run_id": run.run_id, "model": model, "dataset": dataset.name, "history": history,
                        "realised_rate": noisy.rate,
                        "best_test_acc": max(h["test_acc"] for h in history),
                        "final_test_acc": history[-1]["test_acc"], "diverged_step": None})
        if not all(math.isfinite(v) for h in history for v in h.values()):
            raise FloatingPointError(f"alignment run {run.run_id} produced a non-finite measurement")
    return results
