"""The memorisation map judged: where CCE memorises noisy labels, and what the claims say there.

The map (:data:`dmcore.lab.experiments.MAP_SIZES` x :data:`~dmcore.lab.experiments.MAP_WIDTHS`) is one
record per cell: CCE, GCE, IMAE and DM, each tuned over its learning rates on noisy validation labels,
at symmetric noise 0.4, 0.6 and 0.8, five seeds. Its pre-registered criteria
(``book/criteria/memorisation.toml``) say when a cell *memorises* (CCE, tuned on the final rule, fits
more than half of the noisy training subset in every seed at symmetric 0.4, and its early-stopped
accuracy is above 50%) and judge claims 1, 3, 4 and the headline H in every memorising cell, exactly as
:class:`dmcore.lab.judge.Judge` judges them on ``label-noise-fair``. The Holm family under one rule is
every headline test of every cell (:meth:`Map.tests`).

Its addendum (``book/criteria/memorisation-addendum.toml``, committed before its runs) added symmetric
0.6 and a widening rule (:func:`widening`, :meth:`Map.widening`): a learning rate one rung of a ladder
beyond every tuned choice at an edge of its grid, trained in a later session, until none is left.
``Map.load(..., registered=True)`` reads each record's first session alone, the grid registered with
the criteria before the addendum.

Example::

    >>> from dmcore.lab import criteria, regime
    >>> m = regime.Map.load(criteria.load("memorisation-2k-w25"))        # doctest: +SKIP
    >>> m.memorises(2, 48), m.summary("H")                              # doctest: +SKIP
"""

from __future__ import annotations

from . import experiments, judge

__all__ = ["Cell", "Map", "CLAIMS", "widening"]

#: The claims the map judges, in the criteria's order.
CLAIMS = ("1", "3", "4", "H")


class Cell(judge.Judge):
    """One cell of the map: :class:`~dmcore.lab.judge.Judge` whose family of tests is the headline's
    (DM against CCE, GCE and IMAE at each noise rate); the map adjusts them across cells."""

    def _pairs(self, rule: str) -> dict:
        return {("H", f, s): (self.family("dm", s, rule), self.family(f, s, rule))
                for f in ("cce", "gce", "imae") for s in self.noisy}


class Map:
    """The cells of the map (``(size, width) -> Results``) judged by the criteria ``plan``."""

    def __init__(self, cells: dict, plan: dict, paper_gaps: dict | None = None):
        self.plan, self.regime = plan, plan["regime"]
        self.cells = {key: Cell(results, plan, paper_gaps) for key, results in cells.items()}
        self.judged = list(plan["analysis"]["judged"])
        self._adjusted: set[str] = set()

    @classmethod
    def load(cls, plan: dict, folder=None, paper_gaps: dict | None = None, registered: bool = False) -> "Map":
        """The map of ``plan``'s records, read from ``folder`` (default: the book's records); with
        ``registered``, each record's first session alone (the grid registered before any addendum)."""
        cells = {(size, width): experiments.load(experiments.map_name(size, width), folder)
                 for size in experiments.MAP_SIZES for width in experiments.MAP_WIDTHS}
        if registered:
            cells = {key: results.registered() for key, results in cells.items()}
        missing = sorted(set(plan["records"]) - {c.experiment.name for c in cells.values()})
        if missing:
            raise ValueError(f"the criteria name records the map does not define: {', '.join(missing)}")
        return cls(cells, plan, paper_gaps)

    def tests(self, rule: str) -> dict:
        """Every headline test of every cell under ``rule``, Holm-adjusted together:
        ``(size, width, family, setting) -> Test``."""
        if rule not in self._adjusted:
            every = {(*key, k[1], k[2]): t for key, cell in self.cells.items() for k, t in cell.unadjusted(rule).items()}
            judge.adjust(every, self.cells[next(iter(self.cells))].alpha)
            for key, cell in self.cells.items():
                cell.set_tests(rule, {("H", k[2], k[3]): t for k, t in every.items() if k[:2] == key})
            self._adjusted.add(rule)
        return {(*key, k[1], k[2]): t for key, cell in self.cells.items()
                for k, t in cell.tests(rule).items()}

    def cce_fit(self, size: int, width: int) -> list[float]:
        """CCE's fit of the noisy training subset per seed at the regime's setting (tuned, final rule)."""
        cell = self.cells[size, width]
        return cell.per_seed(cell.family("cce", tuple(self.regime["setting"]), "final"), "fit_noisy")

    def learns(self, size: int, width: int) -> float:
        """CCE's mean early-stopped accuracy (the criteria's metric) at the regime's setting."""
        return self.cells[size, width].family("cce", tuple(self.regime["setting"]), "early").test.mean

    def memorises(self, size: int, width: int) -> bool:
        """Whether the cell memorises by the criteria: CCE's noisy fit above the bar in every seed, and
        its early-stopped accuracy above the learning bar in the mean."""
        return (all(v > self.regime["fit_noisy_above"] for v in self.cce_fit(size, width))
                and self.learns(size, width) > self.regime["learns_above"])

    def verdict(self, size: int, width: int, claim: str, rule: str) -> judge.Verdict:
        """``claim`` judged in one cell under ``rule`` (its headline tests adjusted over the map)."""
        self.tests(rule)
        return self.cells[size, width].verdict(claim, rule)

    def overall(self, size: int, width: int, claim: str) -> str:
        """The weakest verdict of ``claim`` in one cell over the judged rules."""
        return judge.weakest(self.verdict(size, width, claim, rule).verdict for rule in self.judged)

    def memorising(self) -> list[tuple[int, int]]:
        """The cells that memorise, in the map's order."""
        return [key for key in self.cells if self.memorises(*key)]

    def summary(self, claim: str) -> str:
        """The claim over the map, by the criteria's summary rule."""
        cells = self.memorising()
        if not cells:
            return "not judged"
        verdicts = [self.overall(*key, claim) for key in cells]
        if all(v == "holds" for v in verdicts):
            return "holds"
        return "partly holds" if any(v != "does not hold" for v in verdicts) else "does not hold"

    def widening(self) -> dict:
        """What the addendum's widening rule asks to train next, over every cell:
        ``(size, width) -> {(loss, noise rate): learning rate}`` (empty where no choice it reads sits at
        an edge it may still move)."""
        rule = self.plan["widening"]
        wanted = {}
        for key, cell in self.cells.items():
            reads = rule["reads"] + (rule["memorising_reads"] if self.memorises(*key) else [])
            found = widening(cell, [tuple(s) for s in reads], rule["ladder"], rule["max_rungs"])
            if found:
                wanted[key] = found
        return wanted

    def provenance_lines(self) -> list[str]:
        """Each cell's record's provenance line (:meth:`dmcore.lab.records.Results.provenance_line`)."""
        return [cell.results.provenance_line() for cell in self.cells.values()]



def widening(cell: Cell, settings: list[tuple], ladder: list[float], max_rungs: int) -> dict:
    """The addendum's widening rule in one cell (:meth:`dmcore.lab.judge.Judge.next_rungs` over the
    registered grid :data:`dmcore.lab.experiments.MAP_LRS`): ``(loss, rate) -> lr``."""
    found = cell.next_rungs(experiments.MAP_LRS, settings, ladder, max_rungs)
    return {(loss, s[1]): lr for (loss, s), lr in found.items()}
