"""Training and evaluation of many (model, loss, noise, seed) runs at once.

:func:`train_runs` trains ``R`` runs of one model on one dataset as one batched computation: the
runs' parameters are stacked (``torch.func.stack_module_state``) and their forward and backward
passes run as batched operations (the model's ``forward_stacked`` where it has one, else ``vmap``
of its ``forward``), each run on its own mini-batches of its own noisy labels. Each run's loss
is computed by its own call on its own batch (the batch mean; for the EDF losses normalised by
the run's own batch sum of weights), so each run's gradient is exactly what it would be alone,
and the test suite checks that batched training equals training one run at a time (in float32 on
the compiled kernel path, bit for bit). SGD with momentum and weight decay over the stacked
tensors is elementwise, hence the same as one optimiser per run.

Every ``eval_every`` steps (and at the end) each run records, on the full splits: test accuracy;
the fit of its clean and of its noisy training subsets to their observed labels; the fraction of
noisy examples predicted as their true class; the mean ``p`` of the observed label over clean and
over noisy examples; the mean and variance of its loss's weights ``w(p)`` over the training set; the
mean range of its logits (largest minus smallest, which softmax ignores, so only weight decay and
normalisation hold it back); the expected calibration error of its test predictions (15 bins,
``test_ece``, :func:`expected_calibration_error`); and, where the dataset has a validation split
(:func:`dmcore.lab.data.with_validation`), the validation accuracy against the clean labels and against
labels corrupted like the training labels (same scheme and rate, drawn from ``seed + 100003``), the
only validation a practitioner with noisy data has, with the noise rate of those labels estimated from
the run's validation probabilities and the noisy labels alone (``val_noise_est``: the confident-learning
estimate, :func:`dmcore.lab.estimate.confident_joint`); and where the dataset has a fresh test split
(:func:`dmcore.lab.data.with_fresh_test`), the accuracy on it (``fresh_acc``, ``final_fresh_acc`` at the
end). At the end it also gives each class's test accuracy (``final_class_acc``).

A run whose logits overflow (NaN or infinite) has diverged: it records the step
(``diverged_step``), stops training and reports NaN for every later metric and for its final
accuracy (its best is the best before), while the runs trained with it go on unaffected.

A run with noise ``instance`` (:func:`dmcore.lab.noise.instance_dependent`, Chen et al., AAAI 2021)
draws its training labels from the class probabilities of a model trained on the clean labels, and its
validation labels from the same model's on the validation split: :func:`clean_probs`, the clean CCE run
of the run's seed under the same model, protocol, device and dtype, averaged over the protocol's
evaluations, trained once per process before the runs that need it. Runs of the other schemes do not
train it, and their labels and training do not change when instance runs are trained with them.

Losses are named as in the papers: ``cce``, ``mae`` (``1 - p``), ``mse`` (``(1 - p)^2``), ``gce``
(``q = 0.7``), ``imae`` (``T = 8``), ``dm`` (``lam = 0.5, beta = 8``), the baselines ``sce``,
``nce+rce`` and ``poly1``, and DM's other EDFs ``normal``, ``exponential`` and ``beta``
(:func:`parse_loss`), with parameters after a colon (``dm:lam=1,beta=16``), and ``-dn`` for a loss's
natural weight under derivative normalisation (``cce-dn``). A run may carry a learning rate of its own
(:class:`Run`); runs of different rates are trained in separate batches. ``imae`` and ``dm`` take the paper's code's ``eps = 1e-6`` unless
given another (``dm:eps=0`` is the exact unit direction; see :mod:`dmcore.losses`).
"""

from __future__ import annotations

import copy
import ctypes
import hashlib
import math
from dataclasses import asdict, dataclass, field, replace

import torch
from torch.func import functional_call, stack_module_state, vmap

from .. import edf as edfs
from .. import losses
from . import estimate, models, noise
from .data import Dataset

__all__ = ["Protocol", "Run", "LossSpec", "parse_loss", "train_runs", "clean_probs", "expected_calibration_error"]


@dataclass(frozen=True)
class Protocol:
    """SGD with momentum and weight decay, the learning rate divided by 10 at each milestone (a
    fraction of ``steps``), mini-batches drawn without replacement within each epoch.

    These defaults train every loss of the book on MNIST-1D with the CNN of :mod:`dmcore.lab.models`
    (record ``label-noise``, chapter "Label noise on MNIST-1D"); MAE trains slowest. They are one
    setting, not a tuned one: the record ``label-noise-tuned`` trains every loss at learning rates
    0.01, 0.05 and 0.2 (:class:`Run` takes a learning rate of its own) and chooses on noisy
    validation labels. Two things matter for the EDF losses:

    * ``eps`` (:mod:`dmcore.losses`): with the exact unit direction (``eps = 0``) a fitted example
      never stops pushing, and DM collapsed on clean data in every seed of the records
      ``eps-objective`` and ``eps-objective-no-decay`` (chapter "Questions reviewers raised"); with
      the papers' code's ``eps = 1e-6``, the default of ``dm`` and ``imae``, it trains as CCE does.
    * on small training sets CCE can break down late under the weight decay (the long-tailed
      subsets of chapter "Class imbalance").
    """

    steps: int = 6000
    batch_size: int = 100
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: tuple[float, ...] = (0.5, 0.75)
    eval_every: int = 250

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Protocol.{name} must be a whole number >= 1, got {value!r}")
        edfs.check_parameter("Protocol.lr", self.lr, 0, low_open=True)
        edfs.check_parameter("Protocol.momentum", self.momentum, 0, 1)
        edfs.check_parameter("Protocol.weight_decay", self.weight_decay, 0)
        for m in self.milestones:
            edfs.check_parameter("a Protocol milestone", m, 0, 1)

    def optimiser(self, parameters) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.MultiStepLR]:
        """SGD over ``parameters`` with this protocol's learning rate, momentum and weight decay, and
        its schedule (the learning rate divided by 10 at each milestone), stepped once per step."""
        optimizer = torch.optim.SGD(parameters, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        milestones = sorted({round(f * self.steps) for f in self.milestones})
        return optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)


@dataclass(frozen=True)
class Run:
    """One configuration: a loss (see :func:`parse_loss`), a noise scheme and rate, a seed, and
    optionally a learning rate of its own (``None``: the protocol's)."""

    loss: str
    noise: str = "symmetric"
    rate: float = 0.0
    seed: int = 0
    lr: float | None = None

    @property
    def run_id(self) -> str:
        lr = "" if self.lr is None else f"|lr={self.lr:g}"
        return f"{self.loss}|{self.noise}:{self.rate:g}{lr}|seed={self.seed}"

    def fields(self) -> dict:
        """The configuration as a dict; ``lr`` only where the run sets one."""
        return {k: v for k, v in asdict(self).items() if not (k == "lr" and v is None)}


@dataclass(frozen=True)
class LossSpec:
    """A loss by name (:func:`dmcore.losses.from_name`): its module and the weight ``w(p)`` it applies."""

    name: str
    loss: object = field(compare=False)     # the nn.Module, called on each run's (B, C) batch

    @property
    def weight(self) -> edfs.EDF | None:
        """The EDF whose weights the loss applies (None for nce+rce, which reads the whole softmax)."""
        return self.loss.edf

    @property
    def edf_path(self) -> bool:
        """True for an EDF loss (normalised by the batch sum of weights)."""
        return isinstance(self.loss, losses.EDFLoss)

    @property
    def eps(self) -> float:
        return getattr(self.loss, "eps", 0.0)


def parse_loss(text: str) -> LossSpec:
    """A loss by name, parameters after a colon (the grammar of :func:`dmcore.losses.from_name`)."""
    return LossSpec(text, losses.from_name(text))



def _group_loss(spec: LossSpec, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum over the runs of each run's own batch loss; ``logits (G, B, C)``, ``target (G, B)``.

    One loss call per run, each on its own ``(B, C)`` batch: an elementwise operation then sees the
    same shape, and an element the same vector lane or scalar tail, whatever the number of runs in
    the group, so a run's arithmetic does not depend on its companions (tested, bit for bit). The
    EDF losses normalise by the run's own batch sum of weights (``reduction='mean'``)."""
    total = logits.new_zeros(())
    for x, t in zip(logits, target):
        total = total + spec.loss(x, t)
    return total


def _stacked(base, shared_input=False):
    """``forward(params, buffers, x)`` of all runs at once, ``x (R, B, ...)`` (or ``(B, ...)`` shared
    by every run): the model's own ``forward_stacked`` where it has one (the MNIST-1D CNN), else
    ``vmap`` of its ``forward`` over the stacked parameters."""
    if hasattr(base, "forward_stacked"):
        def forward(params, buffers, x):
            if shared_input:
                x = x.expand(next(iter(params.values())).shape[0], *x.shape)
            return base.forward_stacked(params, x)
        return forward
    return vmap(lambda p, b, xb: functional_call(base, (p, b), (xb,)), in_dims=(0, 0, None if shared_input else 0))


@torch.no_grad()
def _evaluate(base, params, buffers, x, chunk=1000):
    """Logits of every run on ``x`` (shared by all runs): ``(R, N, C)``, in eval mode (BatchNorm uses
    its running statistics and leaves them alone). A model whose class sets ``evaluate_each`` (the 2-D
    CNN, whose stacked forward pass is slower than one copy's on a large shared batch) is evaluated one
    copy at a time by its plain ``forward``, in chunks of 5000."""
    base.eval()
    try:
        if getattr(base, "evaluate_each", False):
            runs = next(iter(params.values())).shape[0]
            def one(r, xb):
                return functional_call(base, ({k: v[r] for k, v in params.items()},
                                              {k: v[r] for k, v in buffers.items()}), (xb,))
            return torch.stack([torch.cat([one(r, x[i:i + 5 * chunk]) for i in range(0, len(x), 5 * chunk)])
                                for r in range(runs)])
        call = _stacked(base, shared_input=True)
        return torch.cat([call(params, buffers, x[i:i + chunk]) for i in range(0, len(x), chunk)], dim=1)
    finally:
        base.train()


def _metrics(specs, splits: "_Splits", logits_train, logits_test, logits_val=None, logits_fresh=None) -> list[dict]:
    """Each run's metrics at one evaluation (the module docstring lists them) from its logits on the
    full training, test and (where there is one) validation split."""
    out = []
    nan = float("nan")
    observed, clean, noisy_mask, y_test = splits.observed, splits.clean, splits.noisy_mask, splits.y_test
    for r, spec in enumerate(specs):
        prob = logits_train[r].float().softmax(1)
        p_obs = prob.gather(1, observed[r][:, None]).squeeze(1)
        pred = prob.argmax(1)
        fit = pred == observed[r]
        m = noisy_mask[r]
        w = spec.weight(p_obs.double()) if spec.weight is not None else torch.full((1,), nan, dtype=torch.float64)
        extremes = logits_train[r].float().aminmax(dim=1)
        val_pred = None if logits_val is None else logits_val[r].argmax(1)
        out.append({
            "test_acc": (logits_test[r].argmax(1) == y_test).float().mean().item(),
            "fit_clean": fit[~m].float().mean().item() if (~m).any() else nan,
            "fit_noisy": fit[m].float().mean().item() if m.any() else nan,
            "noisy_to_true": (pred[m] == clean[m]).float().mean().item() if m.any() else nan,
            "p_clean": p_obs[~m].mean().item() if (~m).any() else nan,
            "p_noisy": p_obs[m].mean().item() if m.any() else nan,
            "weight_mean": w.mean().item(),
            "weight_var": w.var(unbiased=False).item(),
            "logit_range": (extremes.max - extremes.min).mean().item(),
            "val_acc": nan if val_pred is None else (val_pred == splits.y_val).float().mean().item(),
            "val_acc_noisy": nan if val_pred is None else (val_pred == splits.val_observed[r]).float().mean().item(),
            "val_noise_est": nan if logits_val is None else _noise_estimate(splits.val_observed[r], logits_val[r]),
            "test_ece": expected_calibration_error(logits_test[r], y_test),
        })
        if logits_fresh is not None:
            out[-1]["fresh_acc"] = (logits_fresh[r].argmax(1) == splits.y_fresh).float().mean().item()
    return out


def _noise_estimate(labels: torch.Tensor, logits: torch.Tensor) -> float:
    """The confident-learning estimate of the noise rate of ``labels (N)`` from ``logits (N, C)`` on the
    same examples; NaN where a logit is not finite (a run on its way to diverging)."""
    if not bool(torch.isfinite(logits).all()):
        return float("nan")
    return estimate.confident_joint(labels, logits.double().softmax(1)).rate


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """Expected calibration error (Guo et al., ICML 2017) of ``logits (N, C)`` against ``labels (N)``:
    the examples are binned by confidence (the largest softmax probability) into ``bins`` equal-width
    bins of (0, 1], and ``ECE = sum_b |B_b| / N * |accuracy(B_b) - mean confidence(B_b)|``. NaN where a
    logit is not finite (a run on its way to diverging)."""
    if len(labels) == 0 or not bool(torch.isfinite(logits).all()):     # nothing to bin, or a diverging run
        return float("nan")
    prob = logits.double().softmax(1)
    confidence, pred = prob.max(1)
    hits = (pred == labels).double()
    which = (confidence * bins).ceil().clamp(1, bins).long() - 1
    gap = torch.bincount(which, hits - confidence, minlength=bins)
    return float(gap.abs().sum() / len(labels))


def keep_freed_memory() -> None:
    """Ask glibc to keep freed memory for reuse (``mallopt``: no trimming, no ``mmap`` below 1 GiB).
    Each step allocates and frees tens of MB; by default glibc hands them back to the system and
    the next step page-faults them in again (measured: 25 s instead of 29 s per 500 steps of 75
    runs). The setting lasts for the process, so only the command line (``python -m dmcore``) makes it,
    never :func:`train_runs`; where there is no glibc, nothing changes."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 1 << 30)   # M_TRIM_THRESHOLD
        libc.mallopt(-3, 1 << 30)   # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def train_runs(model: str, dataset: Dataset, runs: list[Run], protocol: Protocol = Protocol(),
               device: str = "cpu", dtype: torch.dtype = torch.float32, progress=None) -> list[dict]:
    """Train ``runs`` together; returns, per run, its configuration, its history and its results.

    Each run's model is initialised from ``torch.manual_seed(run.seed)``, its noisy labels from
    ``run.seed``, and its mini-batch order from ``run.seed``, so a run's result does not depend on
    which other runs it is trained with (exactly in float64; in float32 to rounding, since PyTorch's
    batched matrix products may sum in another order for another number of runs; both tested).
    A run with noise ``instance`` takes its labels from :func:`clean_probs` of its seed (under
    ``protocol`` as given, whatever the run's own learning rate), trained first where this process has
    not trained it yet; its steps are not reported to ``progress``.
    ``progress`` is called with the number of steps done.
    """
    if not runs:
        return []
    rates = sorted({_learning_rate(r, protocol) for r in runs})
    if len(rates) > 1:   # the stacked optimiser has one learning rate: train each rate's runs apart
        return _train_by_learning_rate(model, dataset, runs, protocol, device, dtype, progress, rates)
    probs = {r.seed: clean_probs(dataset, model, protocol, r.seed, device, dtype)
             for r in runs if r.noise == "instance"}
    return _train(model, dataset, runs, replace(protocol, lr=rates[0]), device, dtype, progress, probs)


def _train(model: str, dataset: Dataset, runs: list[Run], protocol: Protocol, device, dtype, progress,
           probs: dict, watch=None) -> list[dict]:
    """:func:`train_runs` of runs of one learning rate, ``protocol``'s; ``probs`` maps the seed of each
    ``instance`` run to its :func:`clean_probs`; ``watch(step, logits_train, logits_val)`` is called at
    each evaluation (see :func:`_record`)."""
    specs = [parse_loss(r.loss) for r in runs]
    device = torch.device(device)
    splits = _splits(dataset, runs, protocol.batch_size, device, dtype, probs)
    stack = _Stack.build(model, dataset.num_classes, splits.x_train[0].numel(), runs, device, dtype)
    optimizer, scheduler = protocol.optimiser(stack.params.values())
    groups = _loss_groups(specs, device)
    histories, diverged = [[] for _ in runs], [None for _ in runs]

    logits_test = _record(0, stack, splits, specs, diverged, histories, watch)
    batches = _mini_batches(runs, len(splits.x_train), protocol.batch_size, device)
    for step, idx in zip(range(1, protocol.steps + 1), batches):
        logits = stack(splits.x_train[idx])
        groups = _without_diverged(groups, logits, diverged, step)
        _sgd_step(specs, groups, logits, torch.gather(splits.observed, 1, idx), optimizer, scheduler)
        if step % protocol.eval_every == 0 or step == protocol.steps:
            logits_test = _record(step, stack, splits, specs, diverged, histories, watch)
        if progress is not None:
            progress(step)
    return _results(model, dataset, runs, splits, histories, diverged, logits_test)


def _learning_rate(run: Run, protocol: Protocol) -> float:
    return protocol.lr if run.lr is None else run.lr


def progress_part(progress, index: int, parts: int, steps: int):
    """The ``progress(step)`` of part ``index`` of ``parts`` trained one after another, ``steps`` steps
    each, reporting to ``progress`` the steps of the whole (None where ``progress`` is None)."""
    if progress is None:
        return None
    return lambda step: progress((index * steps + step) // parts)


def _train_by_learning_rate(model, dataset, runs, protocol, device, dtype, progress, rates) -> list[dict]:
    """:func:`train_runs` of each learning rate's runs apart, the results in the order of ``runs``."""
    done = {}
    for i, lr in enumerate(rates):
        part = [r for r in runs if _learning_rate(r, protocol) == lr]
        report = progress_part(progress, i, len(rates), protocol.steps)
        for result in train_runs(model, dataset, part, protocol, device, dtype, report):
            done[result["run_id"]] = result
    return [done[r.run_id] for r in runs]


#: :func:`clean_probs` computed in this process, by :func:`_clean_key`.
_CLEAN_PROBS: dict = {}


def clean_probs(dataset: Dataset, model: str, protocol: Protocol = Protocol(), seed: int = 0, device: str = "cpu",
                dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor | None]:
    r"""The class probabilities of a model trained on the clean labels, which instance-dependent noise
    needs (:func:`dmcore.lab.noise.instance_dependent`): ``(train, val)``, float64 on the CPU, ``train``
    ``(N_train, C)`` on the training split and ``val`` ``(N_val, C)`` on the validation split (None where
    ``dataset`` has none), each row summing to 1 (to float64 rounding).

    One run of CCE on the clean labels, ``Run("cce", "symmetric", 0.0, seed)``, is trained by this
    module's :func:`train_runs` machinery with ``model``, ``protocol`` (its learning rate), ``device`` and
    ``dtype``, so it is the clean CCE run of that seed in a sweep that has one. At each of the protocol's
    evaluations after step 0, at steps :math:`t_1 < \dots < t_K` (every ``eval_every`` steps and the
    last step), its softmax on the full split, computed in float64 from its eval-mode logits
    :math:`z^{(t)}`, is averaged:

    .. math::

        \bar p_{ij} = \frac{1}{K} \sum_{k=1}^{K} \operatorname{softmax}\big(z^{(t_k)}_i\big)_j .

    The untrained model of step 0 is left out. Chen et al. (AAAI 2021) average over every epoch of
    clean training, so that examples the network fits only late keep part of their doubt; here an
    evaluation stands for an epoch (the defaults evaluate every 250 steps of 100 examples, 6.25 epochs
    of MNIST-1D's 4000 sequences).

    The validation probabilities are held-out predictions: the clean model never trained on those
    examples, so it doubts all of them more than the training examples it fitted, and the noise drawn
    from them (the noisy validation labels of :func:`train_runs`) is somewhat less concentrated on the
    ambiguous examples than the training noise is.

    Computed once per process for each key (:func:`_clean_key`: the dataset's name and a digest of its
    training and validation splits, ``model``, ``protocol``, ``seed``, ``device`` and ``dtype``), so the
    runs of a sweep, all its chunks and learning rates, share it; each call returns its own copies.
    Nothing is written to disk. A clean run that diverges raises :class:`FloatingPointError`. The
    probabilities, hence the instance-dependent labels, are as reproducible as a trained run: the same
    on the same arithmetic, and on another machine's rounding possibly not (the other schemes' labels
    depend on the seed alone).

    Reference: P. Chen, J. Ye, G. Chen, J. Zhao and P.-A. Heng, "Beyond class-conditional assumption:
    a primary attempt to combat instance-dependent label noise", AAAI 2021.

    Example::

        >>> from dmcore.lab import data, train
        >>> protocol = train.Protocol(steps=20, batch_size=50, eval_every=10)
        >>> train_p, val_p = train.clean_probs(data.digits(), "mlp", protocol)
        >>> tuple(train_p.shape), train_p.dtype, val_p
        ((1437, 10), torch.float64, None)
    """
    key = _clean_key(dataset, model, protocol, seed, device, dtype)
    if key not in _CLEAN_PROBS:
        _CLEAN_PROBS[key] = _train_clean(dataset, model, protocol, seed, device, dtype)
    return tuple(None if p is None else p.clone() for p in _CLEAN_PROBS[key])


def _clean_key(dataset: Dataset, model: str, protocol: Protocol, seed: int, device, dtype) -> tuple:
    """The key of :func:`clean_probs`. A dataset's name alone does not tell its examples apart (two
    validation splits of other seeds share one), so a SHA-256 digest of the number of classes and of
    the training and validation inputs and labels (their shapes, dtypes and bytes) goes with it."""
    digest = hashlib.sha256(str(dataset.num_classes).encode())
    for tensor in (dataset.x_train, dataset.y_train, dataset.x_val, dataset.y_val):
        if tensor is None:
            digest.update(b"none")
            continue
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.view(torch.uint8).numpy())
    return dataset.name, digest.hexdigest(), model, protocol, seed, str(torch.device(device)), dtype


def _train_clean(dataset: Dataset, model: str, protocol: Protocol, seed: int, device, dtype) -> tuple:
    """:func:`clean_probs`, trained: the clean CCE run and its softmax averaged over its evaluations."""
    run = Run("cce", "symmetric", 0.0, seed)
    sums, evaluations = [None, None], []

    def accumulate(step, logits_train, logits_val):
        if step == 0:
            return
        evaluations.append(step)
        for split, logits in enumerate((logits_train, logits_val)):
            if logits is not None:
                prob = logits[0].double().softmax(1).cpu()
                sums[split] = prob if sums[split] is None else sums[split] + prob

    (result,) = _train(model, dataset, [run], protocol, device, dtype, None, {}, accumulate)
    if result["diverged_step"] is not None:
        raise FloatingPointError(f"the clean model for instance noise ({run.run_id}, {model} on {dataset.name}) "
                                 f"diverged at step {result['diverged_step']}; its probabilities are undefined")
    return tuple(None if total is None else total / len(evaluations) for total in sums)


@dataclass(frozen=True)
class _Splits:
    """The dataset's splits on the training device, with every run's noisy labels: ``observed`` and
    ``noisy_mask`` ``(R, N)``, the realised noise rates, and on a validation split labels corrupted like
    the training labels (``val_observed``, drawn from ``run.seed + 100003``)."""

    x_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    clean: torch.Tensor
    observed: torch.Tensor
    noisy_mask: torch.Tensor
    realised_rates: list[float]
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None
    val_observed: torch.Tensor | None = None
    x_fresh: torch.Tensor | None = None
    y_fresh: torch.Tensor | None = None


def _splits(dataset: Dataset, runs: list[Run], batch_size: int, device, dtype, probs: dict | None = None) -> _Splits:
    """:class:`_Splits` of ``dataset`` for ``runs``; a batch larger than the training split is refused.
    ``probs`` maps the seed of each ``instance`` run to its :func:`clean_probs` ``(train, val)``; the
    other schemes get no probabilities (and :func:`dmcore.lab.noise.by_name` would ignore them)."""
    x_train = dataset.x_train.to(device, dtype)
    x_test = dataset.x_test.to(device, dtype)
    y_test = dataset.y_test.to(device)
    if batch_size > len(x_train):
        raise ValueError(f"batch size {batch_size} is larger than the training split of {dataset.name} "
                         f"({len(x_train)} examples)")
    probs = probs or {}

    def clean(run: Run, split: int):    # split 0: training, 1: validation
        return probs[run.seed][split] if run.noise == "instance" and run.seed in probs else None

    noisy = [noise.by_name(dataset.y_train, r.noise, r.rate, dataset.num_classes, r.seed, probs=clean(r, 0))
             for r in runs]
    observed = torch.stack([n.labels for n in noisy]).to(device)
    noisy_mask = torch.stack([n.noise_mask for n in noisy]).to(device)
    val = {}
    if dataset.x_val is not None:
        val_observed = [noise.by_name(dataset.y_val, r.noise, r.rate, dataset.num_classes, r.seed + 100003,
                                      probs=clean(r, 1)).labels for r in runs]
        val = dict(x_val=dataset.x_val.to(device, dtype), y_val=dataset.y_val.to(device),
                   val_observed=torch.stack(val_observed).to(device))
    if dataset.x_fresh is not None:
        val.update(x_fresh=dataset.x_fresh.to(device, dtype), y_fresh=dataset.y_fresh.to(device))
    return _Splits(x_train, x_test, y_test, dataset.y_train.to(device), observed, noisy_mask,
                   [n.rate for n in noisy], **val)


@dataclass(frozen=True)
class _Stack:
    """The runs' models as one: stacked parameters (each ``(R, *shape)``, requiring grad) and buffers,
    the architecture on the meta device, and the batched forward pass of training (:func:`_stacked`)."""

    base: torch.nn.Module
    params: dict
    buffers: dict
    forward: object

    @classmethod
    def build(cls, model: str, num_classes: int, in_features: int, runs: list[Run], device, dtype) -> "_Stack":
        """Each run's model initialised from ``torch.manual_seed(run.seed)``, the caller's random state
        left as it was."""
        nets = []
        with torch.random.fork_rng(devices=[]):
            for r in runs:
                torch.manual_seed(r.seed)
                nets.append(models.build(model, num_classes, in_features).to(device, dtype))
        params, buffers = stack_module_state(nets)
        params = {k: v.detach().requires_grad_() for k, v in params.items()}
        base = copy.deepcopy(nets[0]).to("meta")
        return cls(base, params, buffers, _stacked(base))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The logits ``(R, B, C)`` of training on each run's own batch, ``x (R, B, ...)``."""
        return self.forward(self.params, self.buffers, x)

    def evaluate(self, x: torch.Tensor) -> torch.Tensor:
        """The logits ``(R, N, C)`` of every run on ``x`` (shared by all runs), in eval mode."""
        return _evaluate(self.base, self.params, self.buffers, x)


def _loss_groups(specs: list[LossSpec], device) -> dict[str, torch.Tensor]:
    """The indices of the runs of each loss (one :func:`_group_loss` call per group and step)."""
    groups = {}
    for i, spec in enumerate(specs):
        groups.setdefault(spec.name, []).append(i)
    return {name: torch.tensor(idx, device=device) for name, idx in groups.items()}


def _mini_batches(runs: list[Run], num_train: int, batch_size: int, device):
    """Each step's indices ``(R, B)``: per epoch each run draws its own permutation (from its generator,
    seeded ``10_000 + run.seed``) and takes consecutive batches of it; a last partial batch is left out."""
    generators = [torch.Generator().manual_seed(10_000 + r.seed) for r in runs]
    while True:
        orders = torch.stack([torch.randperm(num_train, generator=g) for g in generators]).to(device)
        for position in range(num_train // batch_size):
            yield orders[:, position * batch_size:(position + 1) * batch_size]


def _without_diverged(groups: dict, logits: torch.Tensor, diverged: list, step: int) -> dict:
    """``groups`` without the runs whose logits are not all finite: they diverged (the first such step is
    recorded in ``diverged``) and stop training while the others train on."""
    finite = torch.isfinite(logits).flatten(1).all(1)
    if bool(finite.all()):
        return groups
    for r in (~finite).nonzero().flatten().tolist():
        diverged[r] = step if diverged[r] is None else diverged[r]
    groups = {name: members[finite[members]] for name, members in groups.items()}
    return {name: members for name, members in groups.items() if len(members)}


def _sgd_step(specs, groups, logits, targets, optimizer, scheduler) -> None:
    """One step of every run still training: each run's own batch loss, one backward pass, SGD."""
    optimizer.zero_grad(set_to_none=True)
    if groups:
        sum(_group_loss(specs[int(members[0])], logits[members], targets[members])
            for members in groups.values()).backward()
        optimizer.step()
    scheduler.step()


def _record(step: int, stack: _Stack, splits: _Splits, specs, diverged: list, histories: list,
            watch=None) -> torch.Tensor:
    """Append every run's metrics at ``step`` to its history (NaN once it diverged); the test logits.
    ``watch`` (where given) is called with ``step`` and the logits ``(R, N, C)`` on the training and the
    validation split (None without one)."""
    logits_train = stack.evaluate(splits.x_train)
    logits_test = stack.evaluate(splits.x_test)
    logits_val = None if splits.x_val is None else stack.evaluate(splits.x_val)
    if watch is not None:
        watch(step, logits_train, logits_val)
    logits_fresh = None if splits.x_fresh is None else stack.evaluate(splits.x_fresh)
    for r, m in enumerate(_metrics(specs, splits, logits_train, logits_test, logits_val, logits_fresh)):
        if diverged[r] is not None:
            m = {key: math.nan for key in m}
        histories[r].append({"step": step, **m})
    return logits_test


def _results(model: str, dataset: Dataset, runs: list[Run], splits: _Splits, histories: list, diverged: list,
             logits_test: torch.Tensor) -> list[dict]:
    """Each run's configuration, history and results, from its last evaluation's test logits."""
    y_test = splits.y_test
    results = []
    for r, run in enumerate(runs):
        history = histories[r]
        hits = (logits_test[r].argmax(1) == y_test).float()
        class_acc = [hits[y_test == c].mean().item() if diverged[r] is None and bool((y_test == c).any()) else math.nan
                     for c in range(dataset.num_classes)]
        measured = [h["test_acc"] for h in history if not math.isnan(h["test_acc"])]
        results.append({**run.fields(), "run_id": run.run_id, "model": model, "dataset": dataset.name,
                        "realised_rate": splits.realised_rates[r], "history": history, "diverged_step": diverged[r],
                        "best_test_acc": max(measured) if measured else math.nan,
                        "final_test_acc": history[-1]["test_acc"], "final_class_acc": class_acc,
                        **({"final_fresh_acc": history[-1]["fresh_acc"]} if "fresh_acc" in history[-1] else {})})
    return results
