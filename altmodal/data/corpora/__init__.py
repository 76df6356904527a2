"""The paper's datasets (and AV-digits) from their raw folders: one module per corpus.

Each module documents the raw layout it reads, offers a ``plan`` (raw folder -> items to decode,
used by ``altmodal prepare``) and a ``load`` (prepared cache -> dataset with splits, kinds and
transforms, used by ``altmodal train --dataset NAME --data-dir CACHE``). :mod:`altmodal.data.registry`
registers each of :data:`CORPORA` as a dataset.
"""

from __future__ import annotations

from altmodal.data.corpora import avdigits, cremad, food101, iemocap, kinetics, mvsa
from altmodal.data.corpora.common import Corpus

CORPORA: dict[str, Corpus] = {
    c.name: c for c in (cremad.CORPUS, kinetics.CORPUS, food101.CORPUS, mvsa.CORPUS, iemocap.CORPUS, avdigits.CORPUS)
}

__all__ = ["CORPORA", "Corpus"]
