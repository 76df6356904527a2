"""Test-time fusion chosen per run on the validation split, where the encoders did not train.

MLA fuses its modalities' predictions with per-sample entropy weights. No single rule is best on
every dataset: where one modality's confidence is miscalibrated, a plain average of the logits
(a product of experts) or a small stacked classifier over the modalities' log-probabilities fuses
better; where the entropy weights are right, fitting anything on a small validation split only
adds variance. So the rule is chosen inside each run, from that run's own validation data:

- ``entropy``: the paper's per-sample softmax of minus the prediction entropy;
- ``mean``: the present modalities' logits averaged (equal weights);
- ``head``: where the strategy trains one (MLA's ``fusion_head``), a linear head over the
  concatenated features, trained on the training split on DETACHED features, so that it never
  changes the encoders;
- ``stacked``: multinomial logistic regression from the concatenated log-probabilities of every
  modality to the class, L2-regularised, fitted on validation samples that have every modality.

Each rule is scored by its accuracy on the validation samples with every modality present; a
fitted rule is scored by K-fold cross-fitting (fit on K-1 folds, score the held-out fold), so
it is not credited for fitting its own scoring data. The best score wins; ties go to the earlier
(simpler) rule. The entropy rule's score is slightly optimistic (the epoch was selected on the
same split), which makes the choice conservative. Samples missing a modality are always fused by
the entropy rule over their present modalities: the stacked classifier never saw them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from altmodal.fusion import combine, entropy_weights, fixed_weights

RULES = ("entropy", "mean", "head", "stacked")


def stack_inputs(logits: Mapping[str, Tensor]) -> Tensor:
    """(N, M*C) concatenated log-probabilities of the modalities, in their order."""
    return torch.cat([torch.log_softmax(v.float(), dim=1) for v in logits.values()], dim=1)


def fit_stacked(inputs: Tensor, label: Tensor, num_classes: int, l2: float = 1e-2) -> tuple[Tensor, Tensor]:
    """L2-regularised multinomial logistic regression: (weight (M*C, C), bias (C,)).

    Minimises mean cross-entropy + ``l2`` * ||weight||^2 with L-BFGS from zero (a convex
    problem: the result does not depend on any random state).
    """
    inputs = inputs.detach().double()
    weight = torch.zeros(inputs.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(inputs @ weight + bias, label) + l2 * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return weight.detach().float(), bias.detach().float()


def apply_rule(
    rule: str,
    logits: Mapping[str, Tensor],
    present: Mapping[str, Tensor],
    stacked: tuple[Tensor, Tensor] | None = None,
    head: Tensor | None = None,
) -> Tensor:
    """(B, C) fused logits by ``rule`` (``head``: the fusion head's (B, C) logits); rows missing
    a modality use the entropy rule."""
    entropy = combine(logits, entropy_weights(logits, present))
    if rule == "entropy":
        return entropy
    if rule == "mean":
        return combine(logits, fixed_weights([1.0] * len(logits), list(logits), present))
    full = torch.stack([present[m] for m in logits], dim=1).all(dim=1).unsqueeze(1)
    if rule == "head":
        assert head is not None, "the head rule needs the fusion head's logits"
        return torch.where(full, head.to(entropy.dtype), entropy)
    if rule == "stacked":
        assert stacked is not None, "the stacked rule needs its fitted weights"
        weight, bias = stacked
        fitted = stack_inputs(logits) @ weight.to(entropy.device) + bias.to(entropy.device)
        return torch.where(full, fitted.to(entropy.dtype), entropy)
    raise ValueError(f"unknown fusion rule {rule!r}; rules: {', '.join(RULES)}")


@dataclass(frozen=True)
class Choice:
    """The chosen rule, every rule's validation score, and the stacked weights fitted on all of
    the validation samples with every modality."""

    rule: str
    scores: dict[str, float]
    stacked: tuple[Tensor, Tensor]
    samples: int


def choose_rule(
    logits: Mapping[str, Tensor],
    present: Mapping[str, Tensor],
    label: Tensor,
    num_classes: int,
    *,
    head: Tensor | None = None,
    rules: Sequence[str] = RULES,
    folds: int = 5,
    seed: int = 0,
) -> Choice:
    """Score every rule on the validation samples that have every modality; pick the best.

    Args:
        logits: modality -> (N, C) validation logits of each modality.
        present: modality -> (N,) bool.
        label: (N,) classes.
        head: (N, C) validation logits of a trained fusion head (the ``head`` rule is left out
            without them).
        folds: cross-fitting folds for the stacked rule (fewer when there are fewer samples).
        seed: seed of the fold assignment.
    """
    full = torch.stack([present[m] for m in logits], dim=1).all(dim=1)
    logits = {m: v[full] for m, v in logits.items()}
    present = {m: v[full] for m, v in present.items()}
    label = label[full]
    head = head[full] if head is not None else None
    rules = [r for r in rules if r != "head" or head is not None]
    n = len(label)
    inputs = stack_inputs(logits)
    scores: dict[str, float] = {}
    for rule in rules:
        if n == 0:
            scores[rule] = float("nan")
        elif rule == "stacked":
            scores[rule] = _cross_fitted_accuracy(inputs, label, num_classes, folds, seed)
        else:
            fused = apply_rule(rule, logits, present, head=head)
            scores[rule] = float((fused.argmax(1) == label).double().mean())
    valid = [r for r in rules if not np.isnan(scores[r])]
    best = max(valid, key=lambda r: (scores[r], -rules.index(r))) if valid else "entropy"
    stacked = fit_stacked(inputs, label, num_classes) if n else _zero_stack(inputs.shape[1], num_classes)
    return Choice(best, scores, stacked, n)


def _cross_fitted_accuracy(inputs: Tensor, label: Tensor, num_classes: int, folds: int, seed: int) -> float:
    n = len(label)
    k = max(2, min(folds, n // 2))
    if n < 4:
        return float("nan")
    order = np.random.default_rng([seed, 29]).permutation(n)
    correct = 0
    for held in np.array_split(order, k):
        fit_rows = torch.as_tensor(np.setdiff1d(order, held))
        held_rows = torch.as_tensor(held)
        weight, bias = fit_stacked(inputs[fit_rows], label[fit_rows], num_classes)
        correct += int(((inputs[held_rows] @ weight + bias).argmax(1) == label[held_rows]).sum())
    return correct / n


def _zero_stack(width: int, num_classes: int) -> tuple[Tensor, Tensor]:
    return torch.zeros(width, num_classes), torch.zeros(num_classes)


class ChosenFusion(nn.Module):
    """The fitted state of a per-run fusion choice, as buffers (saved with the model).

    Until :meth:`fit` runs (during training, for model selection) it fuses by the entropy rule.
    """

    rule: Tensor
    weight: Tensor
    bias: Tensor

    def __init__(self, modalities: Sequence[str], num_classes: int, rules: Sequence[str] = RULES):
        super().__init__()
        unknown = [r for r in rules if r not in RULES]
        if unknown or not rules:
            raise ValueError(f"unknown fusion rule {unknown[0] if unknown else '(none)'!r}; rules: {', '.join(RULES)}")
        self.modalities = list(modalities)
        self.rules = list(rules)
        width = len(self.modalities) * num_classes
        self.register_buffer("rule", torch.tensor(RULES.index("entropy")))
        self.register_buffer("weight", torch.zeros(width, num_classes))
        self.register_buffer("bias", torch.zeros(num_classes))
        self.scores: dict[str, float] = {}

    @property
    def chosen(self) -> str:
        return RULES[int(self.rule)]

    def forward(
        self, logits: Mapping[str, Tensor], present: Mapping[str, Tensor], head: Tensor | None = None
    ) -> Tensor:
        ordered = {m: logits[m] for m in self.modalities}
        return apply_rule(self.chosen, ordered, present, (self.weight, self.bias), head)

    def fit(
        self,
        logits: Mapping[str, Tensor],
        present: Mapping[str, Tensor],
        label: Tensor,
        seed: int,
        head: Tensor | None = None,
    ) -> Choice:
        """Choose the rule on validation outputs and keep its fitted weights."""
        ordered = {m: logits[m].detach().cpu() for m in self.modalities}
        choice = choose_rule(
            ordered,
            {m: present[m].cpu() for m in self.modalities},
            label.cpu(),
            self.bias.numel(),
            head=None if head is None else head.detach().cpu(),
            rules=self.rules,
            seed=seed,
        )
        self.rule.fill_(RULES.index(choice.rule))
        self.weight.copy_(choice.stacked[0])
        self.bias.copy_(choice.stacked[1])
        self.scores = dict(choice.scores)
        return choice
