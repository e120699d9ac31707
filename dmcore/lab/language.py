"""Token weighting in a byte-level language model: each run trains one :class:`~dmcore.lab.models.ByteMLP`.

The chapter "Token weighting in language models" asks what an EDF does to next-token prediction when
a fraction of the training targets are random tokens. :func:`train_runs` trains one model per run on
:func:`dmcore.lab.data.python_source` (or any dataset of the same form) with its run's noise on the
training targets (:func:`dmcore.lab.noise.by_name`, seeded ``run.seed``) and on the validation targets
(seeded ``run.seed + 100003``, as :mod:`dmcore.lab.train` does); the test targets stay clean. The loss
is :func:`dmcore.linear_edf.linear_edf_loss` of the model's hidden layer and read-out, with the run's
weight (:func:`loss_terms`), so no step forms the logits of a batch.

The optimiser is Adam (Kingma and Ba, ICLR 2015), the usual one for language models: the protocol's
``lr`` (or the run's), ``momentum`` as Adam's first ``beta`` (the second is 0.999), ``weight_decay`` as
its L2 term, the learning rate divided by 10 at each milestone, mini-batches drawn without replacement
within each epoch from a generator seeded ``10_000 + run.seed``.

Every ``eval_every`` steps (and at the end) a run records, with the clean test targets:

- ``test_acc``: the fraction of test positions whose most probable byte is the true next byte;
- ``test_nll``: the mean negative log-probability of the true next byte (nats; the perplexity is its
  exponential), and ``test_ece`` (:func:`dmcore.lab.train.expected_calibration_error`);
- ``val_acc_noisy``, ``val_acc``: accuracy on the validation targets, noisy (what early stopping and
  tuning read) and clean (shown only);
- on a fixed sample of 20,000 training positions (the same in every run; all of them where there are fewer): ``fit_clean`` and ``fit_noisy``,
  the fraction predicted as their observed target among clean and among corrupted positions,
  ``noisy_to_true`` (corrupted positions predicted as their true byte), ``p_clean`` and ``p_noisy``.

Results have the form of :func:`dmcore.lab.train.train_runs`'s, so :mod:`dmcore.lab.sweep` records them.
A run whose loss or logits stop being finite is recorded as diverged at that step (NaN from there on).
"""

from __future__ import annotations

import math

import torch

from .. import edf as edfs
from .. import losses
from ..linear_edf import linear_edf_loss
from . import models, noise, train
from .data import Dataset

__all__ = ["loss_terms", "train_runs", "FIT_SAMPLE"]

#: The training positions on which fitting is measured: this many, drawn once from a generator seeded
#: :data:`FIT_SEED` (not 0: the noise of seed 0 draws its corrupted positions from a generator seeded 0).
FIT_SAMPLE, FIT_SEED = 20_000, 917
_EVAL_CHUNK = 8192


def loss_terms(name: str) -> tuple[edfs.EDF, str, float]:
    """``(edf, normalizer, eps)`` of a loss by name: ``dft`` (:func:`dmcore.edf.dft`), or any name of
    :func:`dmcore.losses.from_name` with a weight. The losses with a natural weight (``cce``, ``gce``,
    ...) average their gradient over the tokens (``normalizer='count'``, ``eps = 0``: exactly their own
    gradient); the EDF losses (``dm``, ``imae``, ...) keep theirs (the batch sum of weights, ``eps``)."""
    if name == "dft":
        return edfs.dft(), "count", 0.0
    module = losses.from_name(name)
    if isinstance(module, losses.EDFLoss):
        return module.edf, module.normalizer, module.eps
    if module.edf is None:
        raise ValueError(f"loss {name!r} is no weighting of one gradient direction: a language run needs an EDF")
    return module.edf, "count", 0.0


def _predict(net, x: torch.Tensor) -> torch.Tensor:
    """The logits ``(N, V)`` of ``x``, in chunks."""
    return torch.cat([net(x[i:i + _EVAL_CHUNK]) for i in range(0, len(x), _EVAL_CHUNK)])


def _mini_batches(n: int, size: int, order: torch.Generator):
    """Each step's positions ``(size)``: a permutation of the ``n`` training positions per epoch (drawn from
    ``order``), taken in consecutive batches; a last partial batch is left out."""
    while True:
        perm = torch.randperm(n, generator=order)
        for position in range(n // size):
            yield perm[position * size:(position + 1) * size]


def _measure(net, dataset: Dataset, fit_x, fit_observed, fit_clean, fit_noisy, val_observed) -> dict:
    net.eval()
    with torch.no_grad():
        test, val, fit = _predict(net, dataset.x_test), _predict(net, dataset.x_val), _predict(net, fit_x)
    net.train()
    nan = float("nan")
    if not all(bool(torch.isfinite(t).all()) for t in (test, val, fit)):
        raise FloatingPointError("logits not finite")
    log_p = test.double().log_softmax(1).gather(1, dataset.y_test[:, None]).squeeze(1)
    prob = fit.softmax(1).gather(1, fit_observed[:, None]).squeeze(1)
    pred = fit.argmax(1)
    clean, noisy = ~fit_noisy, fit_noisy
    return {"test_acc": (test.argmax(1) == dataset.y_test).double().mean().item(),
            "test_nll": -log_p.mean().item(),
            "test_ece": train.expected_calibration_error(test, dataset.y_test),
            "val_acc": (val.argmax(1) == dataset.y_val).double().mean().item(),
            "val_acc_noisy": (val.argmax(1) == val_observed).double().mean().item(),
            "fit_clean": (pred[clean] == fit_observed[clean]).double().mean().item() if clean.any() else nan,
            "fit_noisy": (pred[noisy] == fit_observed[noisy]).double().mean().item() if noisy.any() else nan,
            "noisy_to_true": (pred[noisy] == fit_clean[noisy]).double().mean().item() if noisy.any() else nan,
            "p_clean": prob[clean].mean().item() if clean.any() else nan,
            "p_noisy": prob[noisy].mean().item() if noisy.any() else nan}


def _train_one(model: str, dataset: Dataset, run: train.Run, protocol: train.Protocol, progress) -> dict:
    vocab = dataset.num_classes
    noisy = noise.by_name(dataset.y_train, run.noise, run.rate, vocab, run.seed)
    val_observed = noise.by_name(dataset.y_val, run.noise, run.rate, vocab, run.seed + 100003).labels
    sample = torch.randperm(len(dataset.y_train), generator=torch.Generator().manual_seed(FIT_SEED))[:FIT_SAMPLE]
    fit = (dataset.x_train[sample], noisy.labels[sample], dataset.y_train[sample], noisy.noise_mask[sample])
    weight, normalizer, eps = loss_terms(run.loss)
    torch.manual_seed(run.seed)
    net = models.build(model, vocab, dataset.x_train.shape[1])
    lr = run.lr if run.lr is not None else protocol.lr
    optimizer = torch.optim.Adam(net.parameters(), lr=lr, betas=(protocol.momentum, 0.999),
                                 weight_decay=protocol.weight_decay)
    milestones = sorted({round(f * protocol.steps) for f in protocol.milestones})
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)
    batches = _mini_batches(len(noisy.labels), protocol.batch_size, torch.Generator().manual_seed(10_000 + run.seed))
    history, diverged = [], None
    for step in range(protocol.steps + 1):
        if step % protocol.eval_every == 0 or step == protocol.steps:
            try:
                history.append({"step": step, **_measure(net, dataset, *fit, val_observed)})
            except FloatingPointError:
                diverged = step
                break
        if step == protocol.steps:
            break
        batch = next(batches)
        loss = linear_edf_loss(net.features(dataset.x_train[batch]), net.head.weight, noisy.labels[batch], weight,
                               bias=net.head.bias, normalizer=normalizer, eps=eps)
        if not bool(torch.isfinite(loss)):
            diverged = step
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if progress is not None:
            progress(step + 1)
    if diverged is not None:
        keys = [k for k in history[0] if k != "step"] if history else ["test_acc"]
        done = {h["step"] for h in history}
        history += [{"step": s, **{k: math.nan for k in keys}}
                    for s in list(range(0, protocol.steps, protocol.eval_every)) + [protocol.steps] if s not in done]
    measured = [h["test_acc"] for h in history if not math.isnan(h["test_acc"])]
    return {**run.fields(), "run_id": run.run_id, "model": model, "dataset": dataset.name, "history": history,
            "realised_rate": noisy.rate, "diverged_step": diverged,
            "best_test_acc": max(measured) if measured else math.nan, "final_test_acc": history[-1]["test_acc"]}


def train_runs(model: str, dataset: Dataset, runs: list[train.Run], protocol: train.Protocol = train.Protocol(),
               device: str = "cpu", progress=None) -> list[dict]:
    """One model per run, trained one after another (module docstring); results as
    :func:`dmcore.lab.train.train_runs`'s. A run's result depends only on its own configuration."""
    if model != "byte_mlp" or torch.device(device).type != "cpu":
        raise ValueError(f"language runs train the byte-level model on the CPU, got {model!r} on {device!r}")
    if dataset.x_val is None:
        raise ValueError(f"language runs need a validation split (for early stopping), and {dataset.name} has none")
    results = []
    for i, run in enumerate(runs):
        results.append(_train_one(model, dataset, run, protocol, train.progress_part(progress, i, len(runs),
                                                                                    protocol.steps)))
    return results
