"""The book's lab: everything the chapters need beyond the loss library.

One module per job:

- :mod:`~dmcore.lab.data`: MNIST-1D and digits offline, Fashion-MNIST from Debian's files (an IDX
  reader), long-tailed subsets, validation splits, a CIFAR file reader.
- :mod:`~dmcore.lab.noise`: label-noise generators with exact realised rates, instance-dependent noise.
- :mod:`~dmcore.lab.estimate`: the noise rate from noisy labels and a model's probabilities.
- :mod:`~dmcore.lab.models`: the MNIST-1D CNN, a Fashion-MNIST CNN, an MLP, CIFAR ResNet-20/44/56.
- :mod:`~dmcore.lab.train`: many runs trained as one batched computation.
- :mod:`~dmcore.lab.alignment`: gradient directions and weights along a training trajectory.
- :mod:`~dmcore.lab.sweep`: grids of runs written to tidy files, resumably.
- :mod:`~dmcore.lab.experiments`: the book's experiments, defined once, trained and installed.
- :mod:`~dmcore.lab.records`: a record's provenance and the :class:`~dmcore.lab.records.Results` view.
- :mod:`~dmcore.lab.reproduce`: re-training a sample of a record and the rule it is judged by.
- :mod:`~dmcore.lab.tuning`: each loss's choice on noisy validation labels under a checkpoint rule,
  paired comparisons.
- :mod:`~dmcore.lab.stats`: paired t-tests with sign counts, Holm and Benjamini-Hochberg, TOST.
- :mod:`~dmcore.lab.criteria`: pre-registered criteria, and the proof that they predate their record.
- :mod:`~dmcore.lab.judge`: the claims of a tuning record judged by its criteria.
- :mod:`~dmcore.lab.regime`: the memorisation map judged cell by cell.
- :mod:`~dmcore.lab.panel`: records that share one plan judged together (Fashion-MNIST).
- :mod:`~dmcore.lab.procedures`: a practitioner's ways to choose a weighting from noisy labels alone,
  judged across datasets.
- :mod:`~dmcore.lab.verdicts`: a chapter's claim checks gathered into one verdict table.
- :mod:`~dmcore.lab.papers`: the papers' published tables, as the book keeps them.
- :mod:`~dmcore.lab.plotting`: the book's figure style.
- :mod:`~dmcore.lab.bench`: the EDF losses' speed and memory against ``F.cross_entropy``.
- :mod:`~dmcore.lab.cli`: ``python -m dmcore bench | sweep | experiments | reproduce``.

The lab imports the library (:mod:`dmcore.losses`, :mod:`dmcore.edf`, ...); the library never
imports the lab.
"""
