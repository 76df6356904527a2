"""Train MLA on synthetic data in one and in two processes (gloo) with the same global batch and
print how far the projector P and the shared head's weight end apart, and both runs' metrics."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from safetensors.torch import load_file

ARGS = ["train", "--strategy", "mla", "--dataset", "synthetic", "--epochs", "5", "--batch-size", "64", "--quiet"]


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="ddp-equality-"))
    for name, extra in (("one", []), ("two", ["--nproc", "2"])):
        subprocess.run([sys.executable, "-m", "altmodal", *ARGS, *extra, "--out", str(root / name)], check=True)
    a = load_file(root / "one" / "model.safetensors")
    b = load_file(root / "two" / "model.safetensors")
    for key in ("projector.P", "heads.shared.weight", "heads.shared.bias"):
        print(f"max |{key} (1 process) - {key} (2 processes)| = {float((a[key] - b[key]).abs().max()):.3e}")
    worst = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
    print(f"max abs difference over all {len(a)} tensors of the model: {worst:.3e}")
    for name in ("one", "two"):
        test = json.loads((root / name / "metrics.json").read_text())["test"]
        print(
            f"{name} process(es): fused accuracy {test['fused']['accuracy']:.4f}, "
            + ", ".join(f"{m} {v['accuracy']:.4f}" for m, v in test["unimodal"].items())
        )


if __name__ == "__main__":
    main()
