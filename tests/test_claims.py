"""Verdicts from paired comparisons over seeds, and report tables that stay whole."""

import math

import pytest

from altmodal.claims import claims
from altmodal.tables import markdown


def table(columns, rows):
    return {"columns": list(columns), "rows": [{"label": k, "cells": v} for k, v in rows.items()]}


def tables_with(mla, joint):
    """Minimal tables: the main table's fused accuracy per seed for mla and joint."""
    main = table(
        ["fused accuracy", "m0 (unimodal)", "m1 (unimodal)"],
        {
            "joint": {
                "fused accuracy": joint,
                "m0 (unimodal)": [0.5] * len(joint),
                "m1 (unimodal)": [0.4] * len(joint),
            },
            "mla": {"fused accuracy": mla, "m0 (unimodal)": [0.8] * len(mla), "m1 (unimodal)": [0.7] * len(mla)},
            "each modality alone": {},
        },
    )
    empty = table([], {"joint": {}, "mla": {}})
    return {
        "main": main,
        "laziness": table(["m0", "m1"], {"joint": {"m0": [0.6] * 3, "m1": [0.5] * 3}, "mla": {"m0": [1.0] * 3}}),
        "missing_test": table(["0"], {"joint": {}, "mla": {}}),
        "modality_gap": empty,
        "mean_entropy": empty,
    }


def verdict(result, claim_start):
    return next(c for c in result if c["claim"].startswith(claim_start))


def test_t_quantiles_match_the_tables():
    from altmodal.claims import t_quantile

    assert t_quantile(0.975, 1) == pytest.approx(12.706, abs=2e-3)
    assert t_quantile(0.975, 2) == pytest.approx(4.303, abs=2e-3)
    assert t_quantile(0.975, 9) == pytest.approx(2.262, abs=2e-3)


def test_a_difference_inside_the_noise_is_inconclusive_not_held():
    result = claims(tables_with([0.861, 0.850], [0.852, 0.857]), ["m0", "m1"])  # +0.001, two seeds
    beats = verdict(result, "MLA beats the baselines")
    assert beats["verdict"] == "inconclusive" and beats["n"] == 2
    assert beats["difference"] == pytest.approx(0.001)
    assert "95% interval [" in beats["evidence"] and "n = 2 seeds" in beats["evidence"]


def test_consistent_differences_hold_or_do_not_hold():
    better = claims(tables_with([0.90, 0.91, 0.92], [0.85, 0.855, 0.87]), ["m0", "m1"])
    assert verdict(better, "MLA beats the baselines")["verdict"] == "held"
    worse = claims(tables_with([0.80, 0.81, 0.82], [0.85, 0.855, 0.87]), ["m0", "m1"])
    beats = verdict(worse, "MLA beats the baselines")
    assert beats["verdict"] == "did not hold"
    low, high = beats["interval"]
    assert low < beats["difference"] < high < 0
    assert verdict(worse, "joint training is lazy")["verdict"] == "held"  # ratios 0.5 < 0.9 on every seed
    single = claims(tables_with([0.9], [0.8]), ["m0", "m1"])
    assert verdict(single, "MLA beats the baselines")["verdict"] == "inconclusive"  # n = 1: no interval


def test_seeds_that_do_not_pair_give_no_verdict():
    from altmodal.claims import paired

    comparison = paired([0.9, 0.8], [0.7])
    assert comparison.n == 0 and comparison.verdict == "inconclusive" and math.isnan(comparison.mean)


def test_a_pipe_in_a_column_name_keeps_the_markdown_table_whole():
    text = markdown(table(["m0|m1"], {"mla": {"m0|m1": [0.5]}}), "strategy")
    header, rule, row = text.splitlines()
    assert row.startswith("| mla | 0.500")
    cells = [c for c in header.replace("\\|", "").split("|") if c.strip()]
    assert len(cells) == 2 and "m0\\|m1" in header and rule == "|---|---|"
