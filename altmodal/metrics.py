"""Metrics: pure functions on prediction tensors, and the per-split summary every run reports.

- accuracy, macro-F1 (a row whose scores are NaN predicts no class);
- per-modality (unimodal) accuracy over the samples that have the modality;
- present-subset accuracy: the fused model with only a subset of modalities present;
- modality gap (Liang et al., NeurIPS 2022): distance between the centroids of two modalities'
  L2-normalised features;
- entropy check: AUROC of -entropy for correctness, per modality.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class Outputs:
    """Everything a model predicted on one split (all on CPU, N samples).

    Attributes:
        label: (N,) true classes.
        index: (N,) dataset indices.
        present: modality -> (N,) bool.
        fused: (N, C) fused logits with the samples' own presence.
        unimodal: modality -> (N, C) that modality's own logits inside the model.
        features: modality -> (N, D) pre-head features.
        subsets: "m1+m2" -> (N, C) fused logits with only those modalities present.
    """

    label: Tensor
    index: Tensor
    present: dict[str, Tensor]
    fused: Tensor
    unimodal: dict[str, Tensor]
    features: dict[str, Tensor]
    subsets: dict[str, Tensor] = field(default_factory=dict)


def subset_name(modalities: Sequence[str]) -> str:
    return "+".join(modalities)


EVERY_SUBSET_UP_TO = 4
"""With at most this many modalities (15 subsets) a run is evaluated on every subset of them."""
OTHER_SUBSETS = 8
"""With more, on all of them, each leave-one-out, each alone and this many others."""


def subsets(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    """The non-empty subsets of ``modalities`` a run is evaluated on, largest first, each in
    modality order: every one with up to :data:`EVERY_SUBSET_UP_TO` modalities; with more (2^M - 1
    would grow without bound: 4,095 with 12), all of them, each leave-one-out, each alone and
    :data:`OTHER_SUBSETS` others drawn at random once for these modalities (the same for every
    run of them, so that runs compare)."""
    order = list(modalities)
    if len(order) <= EVERY_SUBSET_UP_TO:
        chosen = {s for k in range(1, len(order) + 1) for s in itertools.combinations(order, k)}
    else:
        chosen = {tuple(order), *itertools.combinations(order, len(order) - 1), *((m,) for m in order)}
        draw = random.Random("+".join(order))
        wanted = len(chosen) + OTHER_SUBSETS
        while len(chosen) < wanted:
            size = draw.randint(2, len(order) - 2)
            chosen.add(tuple(sorted(draw.sample(order, size), key=order.index)))
    return sorted(chosen, key=lambda s: (-len(s), [order.index(m) for m in s]))


def predicted(logits: Tensor) -> Tensor:
    """(N, C) scores -> (N,) the predicted class, -1 (no class) where the scores have no
    probabilities (NaN, or an infinite score): such a row is never counted as class 0, which
    argmax would say, and is wrong for every label, as its empty prediction in the tables."""
    # the softmax is finite exactly where no score is NaN or +inf and some score is above -inf
    valid = ~(logits.isnan() | logits.isposinf()).any(dim=1) & (logits > -torch.inf).any(dim=1)
    return torch.where(valid, logits.argmax(dim=1), torch.full_like(valid, -1, dtype=torch.long))


def accuracy(logits: Tensor, label: Tensor) -> float:
    if len(label) == 0:
        return float("nan")
    return float((predicted(logits) == label).double().mean())


def macro_f1(logits: Tensor, label: Tensor, num_classes: int) -> float:
    """Unweighted mean over classes of F1. A class that is predicted but never the label scores
    0; a class that is neither the label nor predicted is left out of the mean; a row without
    a prediction (see :func:`predicted`) is a miss of its label."""
    pred = predicted(logits)

    def count(classes: Tensor) -> Tensor:  # (C,) how often each class occurs
        return torch.bincount(classes, minlength=num_classes)[:num_classes]

    tp = count(label[pred == label])
    wrong = count(pred[pred >= 0]) - tp + count(label) - tp  # fp + fn
    scores = [2 * t / (2 * t + w) for t, w in zip(tp.tolist(), wrong.tolist()) if t + w > 0]
    return sum(scores) / len(scores) if scores else float("nan")


def entropy(logits: Tensor) -> Tensor:
    """(N, C) logits -> (N,) entropy of the softmax prediction (nats)."""
    logp = torch.log_softmax(logits.float(), dim=1)
    return -(logp.exp() * logp).sum(dim=1)


def auroc(score: Tensor, positive: Tensor) -> float:
    """Area under the ROC curve of ``score`` for the boolean ``positive`` (ties count half)."""
    pos = score[positive].double()
    neg = score[~positive].double()
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    ranks = _average_ranks(torch.cat([pos, neg]))
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def _average_ranks(values: Tensor) -> Tensor:
    """1-based ranks of ``values``, ties sharing the mean of their ranks."""
    ordered = torch.sort(values).values
    first = torch.searchsorted(ordered, values, right=False)
    last = torch.searchsorted(ordered, values, right=True)
    return (first + last + 1).double() / 2


def modality_gap(a: Tensor, b: Tensor) -> float:
    """Distance between the centroids of L2-normalised features of two modalities (same rows)."""
    ca = torch.nn.functional.normalize(a.double(), dim=1).mean(dim=0)
    cb = torch.nn.functional.normalize(b.double(), dim=1).mean(dim=0)
    return float(torch.linalg.vector_norm(ca - cb))


def summarize(outputs: Outputs, num_classes: int) -> dict[str, object]:
    """The metrics block of a split: fused, unimodal, present subsets.

    Fused metrics count the samples that have at least one modality (``count``); unimodal
    accuracy counts the samples that have the modality; a present subset counts the samples that
    have every modality of the subset.
    """
    label = outputs.label
    scored = torch.stack(list(outputs.present.values())).any(dim=0)  # samples with any modality
    result: dict[str, object] = {
        "fused": {
            "accuracy": accuracy(outputs.fused[scored], label[scored]),
            "macro_f1": macro_f1(outputs.fused[scored], label[scored], num_classes),
        },
        "unimodal": {},
        "present": {},
        "count": int(scored.sum()),
    }
    unimodal: dict[str, object] = {}
    for m, logits in outputs.unimodal.items():
        rows = outputs.present[m]
        unimodal[m] = {
            "accuracy": accuracy(logits[rows], label[rows]),
            "macro_f1": macro_f1(logits[rows], label[rows], num_classes),
            "count": int(rows.sum()),
        }
    result["unimodal"] = unimodal
    present: dict[str, object] = {}
    for name, logits in outputs.subsets.items():
        rows = torch.stack([outputs.present[m] for m in name.split("+")]).all(dim=0)
        present[name] = {"accuracy": accuracy(logits[rows], label[rows]), "count": int(rows.sum())}
    result["present"] = present
    return result


def analyses(outputs: Outputs) -> dict[str, object]:
    """Modality gaps between every pair and the entropy check per modality."""
    modalities = list(outputs.features)
    gaps = {}
    for a, b in itertools.combinations(modalities, 2):
        rows = outputs.present[a] & outputs.present[b]
        if rows.any():
            gaps[f"{a}|{b}"] = modality_gap(outputs.features[a][rows], outputs.features[b][rows])
    checks = {}
    for m, logits in outputs.unimodal.items():
        rows = outputs.present[m]
        ent = entropy(logits[rows])
        correct = predicted(logits[rows]) == outputs.label[rows]
        checks[m] = {
            "auroc_neg_entropy_correct": auroc(-ent, correct),
            "mean_entropy": float(ent.mean()) if len(ent) else float("nan"),
            "mean_entropy_correct": float(ent[correct].mean()) if correct.any() else float("nan"),
            "mean_entropy_wrong": float(ent[~correct].mean()) if (~correct).any() else float("nan"),
        }
    return {"modality_gap": gaps, "entropy": checks}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    t = torch.tensor([v for v in values], dtype=torch.float64)
    if len(t) == 0:
        return float("nan"), float("nan")
    return float(t.mean()), float(t.std()) if len(t) > 1 else 0.0


def flatten_metrics(block: Mapping[str, object], prefix: str = "") -> dict[str, float]:
    """A nested metrics dict as flat 'a.b.c' -> number entries (numbers only)."""
    flat: dict[str, float] = {}
    for key, value in block.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, name + "."))
        elif isinstance(value, (int, float)):
            flat[name] = float(value)
    return flat
