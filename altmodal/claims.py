"""The paper's claims (method.md section 2.4), each checked against a benchmark's tables.

Every check is a paired comparison over seeds: per seed, the difference that the claim says is
positive (MLA minus its rival on the same seed, or a value minus the claim's threshold); the
evidence is the mean difference with its 95% t-interval and the number of seeds n. The verdict is
``held`` when the whole interval is above zero, ``did not hold`` when it is below, and
``inconclusive`` when it contains zero or there are fewer than two seeds. Checks the grid cannot
answer (no joint run, no ablation) are left out.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from altmodal.tables import Table, cell_mean, cell_values

VERDICTS = ("held", "inconclusive", "did not hold")


@functools.lru_cache(maxsize=64)
def t_quantile(p: float, df: int) -> float:
    """The p-quantile (p >= 0.5) of Student's t distribution with ``df`` degrees of freedom, from
    the density integrated on a fine grid (accurate to about 1e-6 for p <= 0.995)."""
    x = np.linspace(0.0, 80.0, 160_001)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    density = np.exp(log_c - (df + 1) / 2 * np.log1p(x * x / df))
    cdf = 0.5 + np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2 * np.diff(x))])
    return float(np.interp(p, cdf, x))


@dataclass(frozen=True)
class Comparison:
    """Per-seed differences that a claim says are positive, and their 95% interval."""

    differences: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.differences)

    @property
    def mean(self) -> float:
        return float(np.mean(self.differences)) if self.differences else math.nan

    @property
    def interval(self) -> tuple[float, float]:
        if self.n < 2:
            return math.nan, math.nan
        half = t_quantile(0.975, self.n - 1) * float(np.std(self.differences, ddof=1)) / math.sqrt(self.n)
        return self.mean - half, self.mean + half

    @property
    def verdict(self) -> str:
        low, high = self.interval
        if low > 0:
            return "held"
        if high < 0:
            return "did not hold"
        return "inconclusive"

    def describe(self, what: str) -> str:
        low, high = self.interval
        interval = f"95% interval [{low:+.3f}, {high:+.3f}]" if self.n >= 2 else "no interval"
        return f"{what}: mean {self.mean:+.3f}, {interval}, n = {self.n} seeds"


def paired(a: Sequence[float], b: Sequence[float] | float) -> Comparison:
    """Per-seed ``a - b`` (``b`` a list over the same seeds, or a threshold); empty when the
    seeds do not pair (different counts)."""
    others = [b] * len(a) if isinstance(b, (int, float)) else list(b)
    if len(others) != len(a):
        return Comparison(())
    return Comparison(tuple(float(x - y) for x, y in zip(a, others)))


def claims(tables: Mapping[str, Table], modalities: Sequence[str]) -> list[dict[str, Any]]:
    """The paper's claims (method.md section 2.4), each checked against the tables.

    Returns one entry per claim that the grid can answer: the claim, the evidence (means, the
    paired difference, its 95% interval, n) and the verdict (held / inconclusive / did not hold).
    """
    out: list[dict[str, Any]] = []
    strategies = [r["label"] for r in tables["main"]["rows"] if r["label"] != "each modality alone"]

    def add(claim: str, evidence: str, comparison: Comparison, what: str) -> None:
        low, high = comparison.interval
        out.append(
            {
                "claim": claim,
                "evidence": f"{evidence}; {comparison.describe(what)}",
                "verdict": comparison.verdict,
                "difference": comparison.mean,
                "interval": [low, high],
                "n": comparison.n,
            }
        )

    lazy = tables["laziness"]
    if "joint" in strategies:
        ratios = {m: cell_mean(lazy, "joint", m) for m in modalities}
        laziest = min(ratios, key=ratios.__getitem__)
        add(
            "joint training is lazy (a modality's accuracy inside the joint model is below 0.9 of its accuracy alone)",
            _pairs(ratios),
            paired([0.9] * len(cell_values(lazy, "joint", laziest)), cell_values(lazy, "joint", laziest)),
            f"0.9 minus {laziest}'s ratio",
        )
    if "mla" not in strategies:
        return out
    ratios = {m: cell_mean(lazy, "mla", m) for m in modalities}
    laziest = min(ratios, key=ratios.__getitem__)
    add(
        "MLA removes laziness (every ratio at least 0.95)",
        _pairs(ratios),
        paired(cell_values(lazy, "mla", laziest), 0.95),
        f"{laziest}'s ratio minus 0.95",
    )
    main = tables["main"]
    fused = {s: cell_mean(main, s, "fused accuracy") for s in strategies}
    others = [s for s in strategies if s != "mla"]
    if others:
        rival = max(others, key=fused.__getitem__)
        add(
            "MLA beats the baselines (fused accuracy)",
            _pairs(fused),
            paired(cell_values(main, "mla", "fused accuracy"), cell_values(main, rival, "fused accuracy")),
            f"mla minus {rival} (the best baseline)",
        )
    missing = tables["missing_test"]
    if len(missing["columns"]) > 1 and others:
        top = missing["columns"][-1]
        drops = {s: _drops(missing, s, top) for s in strategies}
        means = {s: float(np.mean(d)) if d else math.nan for s, d in drops.items()}
        rival = min(others, key=lambda s: means[s] if not math.isnan(means[s]) else math.inf)
        add(
            f"MLA degrades least when modalities go missing (accuracy lost from rate 0 to {top}, test only)",
            _pairs(means),
            paired(drops[rival], drops["mla"]),
            f"{rival}'s loss (the smallest of the baselines) minus mla's",
        )
    ablation = tables.get("ablation")
    if ablation is not None:
        for variant, what in (("no projection", "head gradient modification"), ("fixed fusion", "dynamic fusion")):
            if not math.isnan(cell_mean(ablation, variant, "fused accuracy")):
                add(
                    f"{what} helps (MLA vs {variant}, fused accuracy)",
                    _pairs({s: cell_mean(ablation, s, "fused accuracy") for s in ("MLA", variant)}),
                    paired(
                        cell_values(ablation, "MLA", "fused accuracy"), cell_values(ablation, variant, "fused accuracy")
                    ),
                    f"MLA minus {variant}",
                )
    gaps = tables["modality_gap"]
    if "joint" in strategies and gaps["columns"]:
        pair = gaps["columns"][0]
        add(
            f"MLA's modality gap is larger than joint training's ({pair})",
            _pairs({s: cell_mean(gaps, s, pair) for s in ("mla", "joint")}),
            paired(cell_values(gaps, "mla", pair), cell_values(gaps, "joint", pair)),
            "mla minus joint",
        )
    accuracy = {m: cell_mean(main, "mla", f"{m} (unimodal)") for m in modalities}
    entropy = tables["mean_entropy"]
    weak, strong = min(accuracy, key=accuracy.__getitem__), max(accuracy, key=accuracy.__getitem__)
    if weak != strong:
        add(
            f"the inferior modality's predictions are more uncertain (MLA: {weak} is weaker than {strong})",
            "mean entropy " + _pairs({m: cell_mean(entropy, "mla", m) for m in modalities}),
            paired(cell_values(entropy, "mla", weak), cell_values(entropy, "mla", strong)),
            f"{weak}'s entropy minus {strong}'s",
        )
    return out


def _drops(missing: Table, strategy: str, top: str) -> list[float]:
    """Per seed: accuracy at rate 0 minus accuracy at rate ``top``."""
    return [a - b for a, b in zip(cell_values(missing, strategy, "0"), cell_values(missing, strategy, top))]


def _pairs(values: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in values.items())
