"""What lets the projected head update exceed the change it allows late in training (README, "The
head projection, checked"): float32 round-off in the head's weight, in P, or something else?

One run of MLA with the projected update (``--preset paper --projection-target update``) and its
statistics on; each step also records, on the other modalities' running means h:

- ``vs_PT``: |moved h| / |raw P^T h|, the guarantee against the matrix the projection applies
  (P^T, where the statistic reads P: a difference would be P's asymmetry);
- ``store_err``: |(moved - raw P^T) h| / |raw P^T h|, what storing W + raw P^T in the weight's
  precision adds to the exact projected update, over the allowed change;
- ``asym``: the relative difference of |raw P h| and |raw P^T h| (P's round-off);
- ``allowed_rel``: |raw P^T h| / |raw h|, the allowed change over the unprojected one;
- ``ulp_bound``: the change half a float32 unit in the last place of every entry of W could make.

With ``float64`` the whole network trains in double precision (encoders' inputs and the head's
features cast; the run's final evaluation is skipped, the history is what is read). Per epoch, the
geometric mean over its steps. Run from the repository root:

    python benchmarks/hgm_roundoff.py mfeat 100 0 [float64]
    python benchmarks/hgm_roundoff.py ../shared/data/multiview/mnist4.npz 100 0 [float64]
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

import altmodal.model as model
from altmodal.experiment import resolve, train_run
from altmodal.projection import HeadProjector
from altmodal.runs import read_csv
from altmodal.strategies.mla import MLA

statistics = HeadProjector.statistics


def diagnosed(
    self: HeadProjector,
    modality: str,
    weight: Tensor,
    kept: Mapping[str, Tensor],
    raw: Tensor | None,
    optimizer: torch.optim.Optimizer | None,
) -> dict[str, Tensor]:
    """The projector's statistics and the diagnostics above, in float64."""
    stats = statistics(self, modality, weight, kept, raw, optimizer)
    others = [j for j, m in enumerate(self.modalities) if m != modality and self.host_seen[j] > 0]
    if not others or raw is None:
        return stats
    h, P, R = self.means[others].double(), self.P.double(), raw.double()
    moved, intended = (weight - kept["before"]).double(), R @ P.T
    allowed = (h @ intended.T).norm(dim=1).clamp_min(1e-300)
    ulp = weight.abs().double() * 2.0**-24
    ratios = {
        "vs_PT": (h @ moved.T).norm(dim=1) / allowed,
        "store_err": (h @ (moved - intended).T).norm(dim=1) / allowed,
        "asym": ((h @ P @ R.T).norm(dim=1) - allowed).abs() / allowed,
        "allowed_rel": allowed / (h @ R.T).norm(dim=1).clamp_min(1e-300),
        "ulp_bound": (h.abs() @ ulp.T).norm(dim=1) / allowed,
    }
    return {**stats, **{f"log10_{k}": v.mean().clamp_min(1e-300).log10() for k, v in ratios.items()}}


def in_float64() -> None:
    """Train in double precision: encoders' inputs and the head's features cast to float64."""
    torch.set_default_dtype(torch.float64)
    run, logits = model.run_encoder, MLA.unimodal_logits
    model.run_encoder = lambda encoder, x: run(encoder, x.double() if x.is_floating_point() else x)
    MLA.unimodal_logits = lambda self, features: logits(self, {m: f.double() for m, f in features.items()})


def main() -> None:
    dataset, epochs, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if sys.argv[4:] == ["float64"]:
        in_float64()
    torch.set_num_threads(1)
    HeadProjector.statistics = diagnosed  # type: ignore[method-assign]
    views = ("fou", "mor") if dataset == "mfeat" else ()
    settings = {"strategy": "mla", "dataset": dataset, "modalities": views, "seed": seed, "preset": "paper"}
    config = resolve({**settings, "projection_target": "update", "projection_stats": True, "epochs": epochs})
    with tempfile.TemporaryDirectory() as tmp:
        try:
            train_run(config, Path(tmp))
        except RuntimeError as err:  # float64: the final evaluation; the history is written
            print(f"final evaluation skipped: {str(err).splitlines()[0]}")
        rows = read_csv(Path(tmp) / "history.csv")
    keys = [k for k in rows[0] if k.startswith("hgm_log10")]
    print("| epoch | " + " | ".join(k[len("hgm_log10_") :] for k in keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for e in sorted({1, 11, 41, epochs // 2, epochs - 10, epochs}):
        if 1 <= e <= len(rows):
            print(f"| {e} | " + " | ".join(f"{10 ** float(rows[e - 1][k]):.3g}" for k in keys) + " |")


if __name__ == "__main__":
    main()
