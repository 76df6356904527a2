"""How noisy D&R's cluster purity is with one k-means++ start and with the best of ten.

Trains joint late fusion for 20 epochs on mfeat (fou, mor) and on the real multi-view sets
100leaves and proteinfold (from ../shared/data/multiview), then measures each modality's purity
on its training features over 20 k-means seeds: mean, standard deviation and range, for 1 and 10
starts. Run from the repository root: ``python benchmarks/purity_noise.py``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from altmodal.clustering import cluster_purity
from altmodal.data.registry import load_splits
from altmodal.experiment import resolve, train_run

SETS = (
    ("mfeat", ("fou", "mor")),
    ("../shared/data/multiview/100leaves.npz", ()),
    ("../shared/data/multiview/proteinfold.npz", ()),
)


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        for k, (dataset, views) in enumerate(SETS):
            if dataset.endswith(".npz") and not Path(dataset).is_file():
                print(f"{dataset}: absent, skipped")
                continue
            config = resolve({"strategy": "joint", "dataset": dataset, "modalities": views, "epochs": 20})
            model = train_run(config, Path(tmp) / str(k)).model
            splits = load_splits(config.data, config.train.seed)
            out = model.strategy.collect(splits.train, all_subsets=False)
            for m in list(out.features)[:3]:
                for starts in (1, 10):
                    values = [
                        cluster_purity(out.features[m], out.label, splits.train.num_classes, seed, starts)
                        for seed in range(20)
                    ]
                    print(
                        f"{Path(dataset).stem} {m}: {starts:>2} starts, purity mean {np.mean(values):.4f} "
                        f"sd {np.std(values):.4f} range {np.ptp(values):.4f}"
                    )


if __name__ == "__main__":
    main()
