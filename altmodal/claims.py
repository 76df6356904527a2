"""The paper's claims (method.md section 2.4), each checked against a benchmark's tables.

Each check states the claim, the evidence (means, and for comparisons the spread and whether the
difference exceeds one standard deviation) and whether it held. Checks the grid cannot answer
(no joint run, no ablation) are left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from altmodal.metrics import mean_std
from altmodal.tables import Table, cell_mean, cell_values, fmt


def claims(tables: Mapping[str, Table], modalities: Sequence[str]) -> list[dict[str, Any]]:
    """The paper's claims (method.md section 2.4), each checked against the tables.

    Returns one entry per claim that the grid can answer: the claim, the evidence (numbers) and
    whether it held.
    """
    out: list[dict[str, Any]] = []
    strategies = [r["label"] for r in tables["main"]["rows"] if r["label"] != "each modality alone"]

    def add(claim: str, evidence: str, held: bool) -> None:
        out.append({"claim": claim, "evidence": evidence, "held": bool(held)})

    lazy = tables["laziness"]
    if "joint" in strategies:
        ratios = {m: cell_mean(lazy, "joint", m) for m in modalities}
        add(
            "joint training is lazy (a modality's accuracy inside the joint model is below 0.9 of its accuracy alone)",
            _pairs(ratios),
            min(ratios.values()) < 0.9,
        )
    if "mla" not in strategies:
        return out
    ratios = {m: cell_mean(lazy, "mla", m) for m in modalities}
    add("MLA removes laziness (every ratio at least 0.95)", _pairs(ratios), min(ratios.values()) >= 0.95)
    fused = {s: cell_mean(tables["main"], s, "fused accuracy") for s in strategies}
    others = [s for s in strategies if s != "mla"]
    if others:
        rival = max(others, key=fused.__getitem__)
        add(
            "MLA beats the baselines (fused accuracy)",
            _pairs(fused) + "; " + _versus(tables["main"], "mla", rival, "fused accuracy"),
            fused["mla"] >= fused[rival],
        )
    missing = tables["missing_test"]
    if len(missing["columns"]) > 1:
        top = missing["columns"][-1]
        drops = {s: cell_mean(missing, s, "0") - cell_mean(missing, s, top) for s in strategies}
        add(
            f"MLA degrades least when modalities go missing (accuracy lost from rate 0 to {top}, test only)",
            _pairs(drops),
            drops["mla"] <= min(drops.values()),
        )
    ablation = tables.get("ablation")
    if ablation is not None:
        mla = cell_mean(ablation, "MLA", "fused accuracy")
        for variant, what in (("no projection", "head gradient modification"), ("fixed fusion", "dynamic fusion")):
            other = cell_mean(ablation, variant, "fused accuracy")
            if not math.isnan(other):
                add(
                    f"{what} helps (MLA vs {variant}, fused accuracy)",
                    _versus(ablation, "MLA", variant, "fused accuracy"),
                    mla > other,
                )
    gaps = tables["modality_gap"]
    if "joint" in strategies and gaps["columns"]:
        pair = gaps["columns"][0]
        g = {s: cell_mean(gaps, s, pair) for s in ("mla", "joint")}
        add(f"MLA's modality gap is larger than joint training's ({pair})", _pairs(g), g["mla"] > g["joint"])
    accuracy = {m: cell_mean(tables["main"], "mla", f"{m} (unimodal)") for m in modalities}
    entropy = {m: cell_mean(tables["mean_entropy"], "mla", m) for m in modalities}
    weak, strong = min(accuracy, key=accuracy.__getitem__), max(accuracy, key=accuracy.__getitem__)
    if weak != strong:
        add(
            f"the inferior modality's predictions are more uncertain (MLA: {weak} is weaker than {strong})",
            "mean entropy " + _pairs(entropy),
            entropy[weak] > entropy[strong],
        )
    return out


def _versus(t: Table, a: str, b: str, column: str) -> str:
    """'a m ± s vs b m ± s (difference d: beyond / within one standard deviation)'."""
    va, vb = (cell_values(t, x, column) for x in (a, b))
    (ma, sa), (mb, sb) = mean_std(va), mean_std(vb)
    diff = ma - mb
    noise = "within" if abs(diff) <= max(sa, sb) else "beyond"
    return f"{a} {fmt(va)} vs {b} {fmt(vb)} (difference {diff:+.3f}, {noise} one standard deviation)"


def _pairs(values: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in values.items())
