"""Seeded k-means (k-means++ start, Lloyd iterations) and cluster purity, in torch.

Used by Diagnosing & Re-learning (:mod:`altmodal.strategies.relearn`) to measure how well an
encoder's features separate the classes. Small and exact enough for a few thousand samples; it
avoids a dependency on scikit-learn.
"""

from __future__ import annotations

import torch
from torch import Tensor


def scale_to_unit(x: Tensor) -> Tensor:
    """(n, d) features min-max scaled per dimension to [-1, 1] (a constant dimension becomes 0)."""
    low, high = x.min(dim=0).values, x.max(dim=0).values
    span = high - low
    scaled = (x - low) / torch.where(span > 0, span, torch.ones_like(span)) * 2 - 1
    return torch.where(span > 0, scaled, torch.zeros_like(scaled))


def kmeans_plus_plus(x: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """(k, d) initial centres: the first uniformly at random, each next one drawn with probability
    proportional to its squared distance from the nearest centre so far."""
    first = int(torch.randint(len(x), (1,), generator=generator))
    centres = [x[first]]
    nearest = ((x - x[first]) ** 2).sum(dim=1)
    for _ in range(1, k):
        weights = nearest if float(nearest.sum()) > 0 else torch.ones_like(nearest)
        pick = int(torch.multinomial(weights.float(), 1, generator=generator))
        centres.append(x[pick])
        nearest = torch.minimum(nearest, ((x - x[pick]) ** 2).sum(dim=1))
    return torch.stack(centres)


def lloyd(x: Tensor, centres: Tensor, iterations: int = 300) -> tuple[Tensor, float]:
    """Lloyd iterations from ``centres`` until no centre moves or ``iterations`` are done (a
    centre that loses all its members stays where it is): (n,) assignment and its inertia (the
    sum of squared distances to the assigned centres)."""
    k = len(centres)
    distances = torch.cdist(x, centres)
    assign = distances.argmin(dim=1)
    for _ in range(iterations):
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).unsqueeze(1)
        moved = torch.where(counts > 0, sums / counts.clamp_min(1), centres)
        if torch.equal(moved, centres):
            break
        centres = moved
        distances = torch.cdist(x, centres)
        assign = distances.argmin(dim=1)
    return assign, float(distances.gather(1, assign[:, None]).square().sum())


def kmeans(x: Tensor, k: int, generator: torch.Generator, iterations: int = 300, starts: int = 10) -> Tensor:
    """(n,) cluster index of each row of ``x`` (n, d): the best (least inertia) of ``starts``
    k-means runs, each from its own k-means++ start (scikit-learn's n_init, 10 before version 1.4,
    which D&R's code used)."""
    x = x.double()
    runs = [lloyd(x, kmeans_plus_plus(x, k, generator), iterations) for _ in range(starts)]
    return min(runs, key=lambda run: run[1])[0]


def purity(assign: Tensor, labels: Tensor) -> float:
    """Cluster purity: the share of samples whose cluster's most common class is their own,
    (1/N) sum over clusters of max over classes |cluster & class|."""
    if len(labels) == 0:
        return float("nan")
    table = torch.zeros(int(assign.max()) + 1, int(labels.max()) + 1, dtype=torch.long)
    table.index_put_((assign.cpu(), labels.cpu()), torch.ones(len(labels), dtype=torch.long), accumulate=True)
    return float(table.max(dim=1).values.sum()) / len(labels)


def cluster_purity(features: Tensor, labels: Tensor, k: int, seed: int, starts: int = 10) -> float:
    """Purity of a seeded k-means with ``k`` clusters (at most one per sample; the best of
    ``starts``) on the min-max scaled ``features`` (n, d) against ``labels`` (n,); NaN without
    samples."""
    if len(labels) == 0:
        return float("nan")
    generator = torch.Generator().manual_seed(seed)
    x = scale_to_unit(features.double().cpu())
    return purity(kmeans(x, min(k, len(labels)), generator, starts=starts), labels)


def centres(x: Tensor, k: int, generator: torch.Generator, start: Tensor | None = None, starts: int = 3) -> Tensor:
    """(k, d) k-means centres of ``x`` (n, d): Lloyd iterations from ``start`` when given (the
    centres keep their identities from one fit to the next), else the best of ``starts``
    k-means++ starts. A centre that ends without members stays where it started."""
    x = x.double()
    inits = [start.double()] if start is not None else [kmeans_plus_plus(x, k, generator) for _ in range(starts)]
    runs = [(init, *lloyd(x, init)) for init in inits]
    init, assign, _ = min(runs, key=lambda run: run[2])
    sums = torch.zeros_like(init).index_add_(0, assign, x)
    counts = torch.bincount(assign, minlength=k).unsqueeze(1)
    return torch.where(counts > 0, sums / counts.clamp_min(1), init)
