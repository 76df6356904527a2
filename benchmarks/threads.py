"""Seconds per MLA training epoch with 1 and with 2 torch CPU threads, on small and large models.

Each (case, threads) pair trains in a fresh process, one process at a time, so the thread pool
starts clean and two measurements never share the cores; the figure is the median over the
epochs after the first (the first warms the allocator and the thread pool up). The cases:

- ``mfeat`` views (600-2,000 samples, MLP encoders of a few thousand to a few hundred thousand
  multiply-adds per sample);
- ``acm`` and ``cora`` from ``../shared/data/multiview`` (about 3,000 samples, views of 1,400 to
  3,025 features: the largest MLPs a feature file gives), skipped when absent;
- a ResNet18 (width 16) on 600 synthetic three-channel images of 32 x 32 and 64 x 64 pixels
  (with an 8-feature MLP modality beside them), the media-like cases.

    python benchmarks/threads.py                     # every case, 1 and 2 threads, 4 epochs
    python benchmarks/threads.py --cases mfeat3 --threads 1,2,4 --epochs 6

The rule ``altmodal`` applies (``altmodal.threads``) was chosen from these figures; the docs'
Results page quotes them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "multiview"

CASES: dict[str, dict[str, Any]] = {
    "mfeat2": {"dataset": "mfeat", "modalities": ("fou", "mor")},
    "mfeat3": {"dataset": "mfeat", "modalities": ("fou", "kar", "mor"), "samples": 600},
    "mfeat6": {"dataset": "mfeat"},
    "cora": {"file": "cora.npz"},
    "acm": {"file": "acm.npz"},
    "resnet": {"images": (600, 3, 32, 32), "encoder": ("image=resnet18-visual",), "resnet_width": 16},
    "resnet64": {"images": (600, 3, 64, 64), "encoder": ("image=resnet18-visual",), "resnet_width": 16},
}


def case_data(case: dict[str, Any]) -> tuple[dict[str, Any], dict[str, np.ndarray] | None]:
    """The run settings and (for data built here) the arrays of a case."""
    rng = np.random.default_rng(0)
    settings: dict[str, Any] = {"strategy": "mla"}
    if "images" in case:
        n = case["images"][0]
        label = rng.integers(0, 4, n)
        image = rng.normal(size=case["images"]).astype(np.float32) + 0.2 * label[:, None, None, None]
        tab = rng.normal(size=(n, 8)).astype(np.float32) + 0.5 * label[:, None]
        settings.update({"kinds": case["encoder"], "resnet_width": case["resnet_width"], "lr": 0.01})
        return settings, {"image": image, "tab": tab, "label": label}
    if "file" in case:
        path = SHARED / case["file"]
        settings.update({"lr": 0.01})
        with np.load(path, allow_pickle=False) as npz:
            return settings, {k: npz[k] for k in npz.files}
    settings.update({"dataset": case["dataset"], "modalities": case.get("modalities", ())})
    if "samples" in case:
        from altmodal.data.mfeat import load_mfeat

        full = load_mfeat()
        keep = rng.permutation(len(full.labels))[: case["samples"]]
        arrays = {m: np.asarray(full.arrays[m])[keep] for m in case["modalities"]}
        settings.pop("dataset")
        settings.pop("modalities")
        settings["lr"] = 0.01
        return settings, {**arrays, "label": full.labels[keep]}
    return settings, None


def measure(name: str, threads: int, epochs: int) -> dict[str, Any]:
    """Train case ``name`` for ``epochs`` epochs with ``threads`` torch threads (in this process)."""
    import torch

    from altmodal.experiment import resolve, train_run

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as folder:
        settings, data = case_data(CASES[name])
        config = resolve({**settings, "epochs": epochs})
        result = train_run(config, Path(folder) / "run", data=data)
        history = (Path(folder) / "run" / "history.csv").read_text().splitlines()
        header = history[0].split(",")
        seconds = [float(line.split(",")[header.index("seconds")]) for line in history[1:]]
        params = sum(p.numel() for p in result.model.strategy.parameters())
    return {
        "case": name,
        "threads": threads,
        "seconds": seconds,
        "median": float(np.median(seconds[1:] if len(seconds) > 1 else seconds)),
        "parameters": params,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--one", nargs=2, metavar=("CASE", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), args.epochs)))
        return
    print("| case | parameters | " + " | ".join(f"{t} thread(s), s/epoch" for t in args.threads.split(",")) + " |")
    for name in args.cases.split(","):
        if "file" in CASES[name] and not (SHARED / CASES[name]["file"]).is_file():
            print(f"| {name} | skipped: {SHARED / CASES[name]['file']} absent |")
            continue
        figures = []
        for threads in args.threads.split(","):
            command = [sys.executable, __file__, "--one", name, threads, "--epochs", str(args.epochs)]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            figures.append(result)
        cells = [
            f"{r['median']:.3f} ({min(r['seconds'][1:] or r['seconds']):.3f}-{max(r['seconds']):.3f})" for r in figures
        ]
        print(f"| {name} | {figures[0]['parameters']:,} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
