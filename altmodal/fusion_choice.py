"""Test-time fusion chosen per run on held-out predictions the encoders did not train on.

MLA fuses its modalities' predictions with per-sample entropy weights. No single rule is best on
every dataset: where one modality's confidence is miscalibrated, a plain average of the logits
(a product of experts), a weighted one, or a small stacked classifier fuses better; where one
modality is much stronger and the others only add noise, that modality alone is best; where the
entropy weights are right, fitting anything only adds variance. So the rule is chosen inside each
run, from that run's own held-out data: the validation split of a single run, or the out-of-fold
predictions over every training sample of a cross-fitted one (:mod:`altmodal.bagging`). The
candidates:

- ``entropy``: the paper's per-sample softmax of minus the prediction entropy;
- ``mean``: the present modalities' logits averaged (equal weights);
- ``head``: where the strategy trains one (MLA's ``fusion_head``), a linear head over the
  concatenated features, trained on the training split on DETACHED features, so that it never
  changes the encoders;
- ``stacked``: multinomial logistic regression from the concatenated log-probabilities of every
  modality to the class, L2-regularised, fitted on the held-out samples that have every modality
  (a candidate only where they are at least as many as its M*C inputs: fewer, and any labels are
  separable, so the fit learns them by heart);
- ``weighted``: the present modalities' log-probabilities summed with one non-negative weight per
  modality (a product of tempered experts: M numbers, fitted like ``stacked``);
- ``own``: where the model has a fusion of its own (a cross-fitted ensemble of another strategy,
  or of MLA members with their own choices), that fusion;
- ``alone:<m>``: modality m's prediction alone.

Each rule is scored by its accuracy on the held-out samples with every modality present; a
fitted rule is scored by K-fold cross-fitting (fit on K-1 folds, score the held-out fold), so it
is not credited for fitting its own scoring data. The best score wins; ties go to the simpler
rule (:data:`PREFERENCE`). The winner's score is the best of several and so flatters it: the
choice also reports an ``estimate``, the accuracy of choosing by this procedure measured on folds
the choice did not see (nested over the same folds).

Samples missing a modality: ``mean`` and ``weighted`` combine the present modalities; ``entropy``
weighs the present ones; ``head`` and ``stacked`` (which never saw such samples) and ``alone:<m>``
without m fall back to the entropy rule over the present modalities; ``own`` is the model's own
answer for them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from altmodal.fusion import combine, entropy_weights, fixed_weights
from altmodal.metrics import macro_f1

RULES = ("entropy", "mean", "head", "stacked", "weighted", "own")
"""The rules besides ``alone:<m>``, in the order their index is saved (a saved choice is an index
into ``RULES`` followed by ``alone:<m>`` for each modality)."""
PREFERENCE = ("entropy", "mean", "weighted", "own", "alone", "head", "stacked")
"""Which rule wins a tie: the simpler, the earlier."""


def rule_names(modalities: Sequence[str]) -> list[str]:
    """Every rule for these modalities, in the order of the saved index."""
    return [*RULES, *(f"alone:{m}" for m in modalities)]


def stack_inputs(logits: Mapping[str, Tensor]) -> Tensor:
    """(N, M*C) concatenated log-probabilities of the modalities, in their order."""
    return torch.cat([torch.log_softmax(v.float(), dim=1) for v in logits.values()], dim=1)


def _lbfgs(params: list[Tensor], loss_fn: object) -> None:
    """Minimise ``loss_fn()`` over ``params`` with L-BFGS (at most 100 iterations: convex problems,
    where the last digits of the optimum do not change a prediction)."""
    optimizer = torch.optim.LBFGS(params, max_iter=100, tolerance_change=1e-6, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = loss_fn()  # type: ignore[operator]
        loss.backward()
        return loss  # type: ignore[no-any-return]

    with torch.enable_grad():
        optimizer.step(closure)


def fit_stacked(inputs: Tensor, label: Tensor, num_classes: int, l2: float = 1e-2) -> tuple[Tensor, Tensor]:
    """L2-regularised multinomial logistic regression: (weight (M*C, C), bias (C,)).

    Minimises mean cross-entropy + ``l2`` * ||weight||^2 with L-BFGS from zero (a convex
    problem: the result does not depend on any random state).
    """
    inputs = inputs.detach().float()
    weight = torch.zeros(inputs.shape[1], num_classes, requires_grad=True)
    bias = torch.zeros(num_classes, requires_grad=True)
    _lbfgs([weight, bias], lambda: F.cross_entropy(inputs @ weight + bias, label) + l2 * weight.square().sum())
    return weight.detach().float(), bias.detach().float()


def weigh(logprobs: Tensor, weights: Tensor, present: Tensor) -> Tensor:
    """(N, C) sum over the present modalities of w_m log p_m: (N, M, C) log-probabilities, (M,)
    weights, (N, M) presence."""
    return (logprobs * (weights[None, :, None] * present[:, :, None].to(logprobs.dtype))).sum(dim=1)


def fit_weights(logprobs: Tensor, label: Tensor, l2: float = 1e-3) -> Tensor:
    """(M,) positive weights of the ``weighted`` rule (each in (e^-4, e^4)), minimising the mean
    cross-entropy of sum_m w_m log p_m over (N, M, C) complete samples (from w = 1, the mean of
    log-probabilities); a small ``l2`` pull towards 1 keeps a weight the data cannot pin down."""
    logprobs = logprobs.detach().double()  # M numbers: float64 costs nothing here
    raw = torch.zeros(logprobs.shape[1], dtype=torch.float64, requires_grad=True)
    full = torch.ones(logprobs.shape[:2], dtype=torch.bool)

    def weights() -> Tensor:  # exp of a value bounded to (-4, 4): where the data are separable the
        return torch.exp(4 * torch.tanh(raw / 4))  # loss falls forever as the weights grow

    def loss() -> Tensor:
        return F.cross_entropy(weigh(logprobs, weights(), full), label) + l2 * raw.square().sum()

    _lbfgs([raw], loss)
    return weights().detach().float()


@dataclass(frozen=True)
class Fitted:
    """The fitted rules' parameters: ``stacked`` (weight (M*C, C), bias (C,)) and the
    ``weighted`` rule's (M,) weights."""

    stacked: tuple[Tensor, Tensor]
    weights: Tensor


def apply_rule(
    rule: str,
    logits: Mapping[str, Tensor],
    present: Mapping[str, Tensor],
    fitted: Fitted | None = None,
    head: Tensor | None = None,
    own: Tensor | None = None,
    fallback: str = "entropy",
) -> Tensor:
    """(B, C) fused logits by ``rule`` (``head``: the fusion head's (B, C) logits; ``own``: the
    model's own fused logits); see the module docstring for samples missing a modality, which
    the rules that need every modality give to ``fallback`` (``entropy`` or ``weighted``)."""
    names = list(logits)
    entropy = combine(logits, entropy_weights(logits, present))
    if rule == "entropy":
        return entropy
    if rule == "mean":
        return combine(logits, fixed_weights([1.0] * len(logits), names, present))
    if rule == "own":
        assert own is not None, "the own rule needs the model's own fused logits"
        return own.to(entropy.dtype)
    assert fitted is not None or rule not in ("stacked", "weighted"), f"the {rule} rule needs its fitted weights"
    if rule == "weighted" or (fallback == "weighted" and fitted is not None):
        assert fitted is not None
        mask = torch.stack([present[m] for m in names], dim=1)
        logprobs = torch.stack([torch.log_softmax(logits[m].float(), dim=1) for m in names], dim=1)
        entropy = weigh(logprobs, fitted.weights.to(logprobs.device), mask).to(entropy.dtype)  # the fallback
        if rule == "weighted":
            return entropy
    if rule.startswith("alone:"):
        m = rule.partition(":")[2]
        return torch.where(present[m].unsqueeze(1), logits[m].to(entropy.dtype), entropy)
    full = torch.stack([present[m] for m in names], dim=1).all(dim=1).unsqueeze(1)
    if rule == "head":
        assert head is not None, "the head rule needs the fusion head's logits"
        return torch.where(full, head.to(entropy.dtype), entropy)
    if rule == "stacked":
        assert fitted is not None
        weight, bias = fitted.stacked
        out = stack_inputs(logits) @ weight.to(entropy.device) + bias.to(entropy.device)
        return torch.where(full, out.to(entropy.dtype), entropy)
    raise ValueError(f"unknown fusion rule {rule!r}; rules: {', '.join(rule_names(names))}")


@dataclass(frozen=True)
class Choice:
    """The chosen rule, every candidate's score, the estimate of the procedure's accuracy, the
    fitted rules' parameters (fitted on all of the scoring samples: the stacked rule's only where
    it was chosen, zeros otherwise) and how many there were."""

    rule: str
    scores: dict[str, float]
    estimate: float
    fitted: Fitted
    samples: int
    estimate_macro_f1: float = float("nan")
    """The macro-F1 of the same nested predictions as ``estimate``."""

    @property
    def stacked(self) -> tuple[Tensor, Tensor]:
        return self.fitted.stacked


def choose_rule(
    logits: Mapping[str, Tensor],
    present: Mapping[str, Tensor],
    label: Tensor,
    num_classes: int,
    *,
    head: Tensor | None = None,
    own: Tensor | None = None,
    rules: Sequence[str] | None = None,
    folds: int = 5,
    seed: int = 0,
    workers: int = 1,
) -> Choice:
    """Score every candidate on the held-out samples that have every modality; pick the best.

    Args:
        logits: modality -> (N, C) held-out logits of each modality.
        present: modality -> (N,) bool.
        label: (N,) classes.
        head: (N, C) held-out logits of a trained fusion head (the ``head`` rule is left out
            without them).
        own: (N, C) the model's own fused logits (the ``own`` rule is left out without them).
        rules: the candidates (default: every rule that the inputs allow; ``stacked`` only with
            at least M*C complete samples).
        folds: cross-fitting folds for the fitted rules and the estimate (fewer when there are
            fewer samples).
        seed: seed of the fold assignment.
        workers: threads that fit a rule's folds at once (each fit is the same as alone: give more
            than one only where torch runs on one thread and cores are free).
    """
    names = list(logits)
    full = torch.stack([present[m] for m in names], dim=1).all(dim=1)
    logits = {m: v[full].float() for m, v in logits.items()}
    present = {m: v[full] for m, v in present.items()}
    label = label[full]
    head = head[full] if head is not None else None
    own = own[full] if own is not None else None
    candidates = [
        r
        for r in (rules if rules is not None else rule_names(names))
        if (r != "head" or head is not None) and (r != "own" or own is not None)
    ]
    n = len(label)
    if n < len(names) * num_classes:  # fewer samples than its inputs: the stacked rule could only learn them by heart
        candidates = [r for r in candidates if r != "stacked"]
    parts = _folds(n, folds, seed)
    predicted = {r: _predicted(r, logits, present, label, num_classes, parts, head, own, workers) for r in candidates}
    correct = {r: p == label if p is not None else None for r, p in predicted.items()}
    scores = {r: float(c.double().mean()) if c is not None else float("nan") for r, c in correct.items()}
    best = _best(candidates, scores)
    nested = _nested_predictions(predicted, correct, parts)
    estimate = float((nested == label).double().mean()) if nested is not None else float("nan")
    f1 = macro_f1(F.one_hot(nested, num_classes).float(), label, num_classes) if nested is not None else float("nan")
    # the stacked rule's (M*C, C) weights on all samples only where it won (nothing else reads
    # them); the weighted rule's M numbers always (a bag with learners falls back to them)
    fitted = _fit_all(logits, label, num_classes, only=None if best == "stacked" else "weighted")
    return Choice(best, scores, estimate, fitted, n, f1)


def _folds(n: int, folds: int, seed: int) -> list[np.ndarray]:
    """Positions 0..n-1 cut into min(folds, n // 2) shuffled folds (none when n < 4)."""
    if n < 4:
        return []
    order = np.random.default_rng([seed, 29]).permutation(n)
    return np.array_split(order, max(2, min(folds, n // 2)))


def _predicted(
    rule: str,
    logits: Mapping[str, Tensor],
    present: Mapping[str, Tensor],
    label: Tensor,
    num_classes: int,
    parts: Sequence[np.ndarray],
    head: Tensor | None,
    own: Tensor | None,
    workers: int = 1,
) -> Tensor | None:
    """(n,) the class ``rule`` gives each sample (cross-fitted for a fitted rule, ``workers``
    folds at once), or None when there is nothing to score."""
    if len(label) == 0:
        return None
    if rule not in ("stacked", "weighted"):
        return apply_rule(rule, logits, present, head=head, own=own).argmax(1)
    if not parts:
        return None

    def held_out(held: np.ndarray) -> tuple[Tensor, Tensor]:
        rest = torch.as_tensor(np.setdiff1d(np.arange(len(label)), held))
        held_rows = torch.as_tensor(held)
        fitted = _fit_all({m: v[rest] for m, v in logits.items()}, label[rest], num_classes, only=rule)
        sub = {m: v[held_rows] for m, v in logits.items()}
        return held_rows, apply_rule(rule, sub, {m: v[held_rows] for m, v in present.items()}, fitted).argmax(1)

    if workers > 1:  # (torch runs its operations outside the interpreter's lock: the fits overlap)
        with ThreadPoolExecutor(min(workers, len(parts))) as pool:
            done = list(pool.map(held_out, parts))
    else:
        done = [held_out(held) for held in parts]
    out = torch.zeros(len(label), dtype=torch.long)
    for held_rows, classes in done:
        out[held_rows] = classes
    return out


def _fit_all(logits: Mapping[str, Tensor], label: Tensor, num_classes: int, only: str | None = None) -> Fitted:
    """The fitted rules' parameters on these (complete) samples (zeros / ones without samples)."""
    width, m = len(logits) * num_classes, len(logits)
    stacked = (torch.zeros(width, num_classes), torch.zeros(num_classes))
    weights = torch.ones(m)
    if len(label):
        if only in (None, "stacked"):
            stacked = fit_stacked(stack_inputs(logits), label, num_classes)
        if only in (None, "weighted"):
            logprobs = torch.stack([torch.log_softmax(v.float(), dim=1) for v in logits.values()], dim=1)
            weights = fit_weights(logprobs, label)
    return Fitted(stacked, weights)


def _best(candidates: Sequence[str], scores: Mapping[str, float]) -> str:
    valid = [r for r in candidates if not np.isnan(scores[r])]
    if not valid:
        return "entropy"
    return max(valid, key=lambda r: (scores[r], -PREFERENCE.index(r.partition(":")[0])))


def _nested_predictions(
    predicted: Mapping[str, Tensor | None], correct: Mapping[str, Tensor | None], parts: Sequence[np.ndarray]
) -> Tensor | None:
    """(n,) the predictions of 'choose the best-scoring rule', each fold's by the rule chosen on
    the other folds (the choice never sees the samples it is scored on); None without folds."""
    scored = {r: c for r, c in correct.items() if c is not None}
    if not parts or not scored:
        return None
    n = len(next(iter(scored.values())))
    out = torch.zeros(n, dtype=torch.long)
    for held in parts:
        rest = np.setdiff1d(np.arange(n), held)
        inner = {r: float(c[rest].double().mean()) for r, c in scored.items()}
        chosen = predicted[_best(list(scored), inner)]
        assert chosen is not None
        out[torch.as_tensor(held)] = chosen[torch.as_tensor(held)]
    return out


class ChosenFusion(nn.Module):
    """The fitted state of a per-run fusion choice, as buffers (saved with the model).

    Until :meth:`fit` runs (during training, for model selection) it fuses by the entropy rule.

    Args:
        modalities: the modalities, in the order of the model's logits.
        num_classes: C.
        rules: the candidates :meth:`fit` chooses from (default: all; ``head`` and ``own`` take
            part only when their logits are given).
    """

    rule: Tensor
    weight: Tensor
    bias: Tensor
    weights: Tensor

    def __init__(
        self, modalities: Sequence[str], num_classes: int, rules: Sequence[str] | None = None, fallback: str = "entropy"
    ):
        super().__init__()
        self.modalities = list(modalities)
        self.fallback = fallback
        self.names = rule_names(self.modalities)
        self.rules = list(rules) if rules is not None else list(self.names)
        unknown = [r for r in self.rules if r not in self.names]
        if unknown or not self.rules:
            shown = unknown[0] if unknown else "(none)"
            raise ValueError(f"unknown fusion rule {shown!r}; rules: {', '.join(self.names)}")
        width = len(self.modalities) * num_classes
        self.register_buffer("rule", torch.tensor(RULES.index("entropy")))
        self.register_buffer("weight", torch.zeros(width, num_classes))
        self.register_buffer("bias", torch.zeros(num_classes))
        self.register_buffer("weights", torch.ones(len(self.modalities)))
        self.scores: dict[str, float] = {}
        self.estimate = float("nan")
        self.estimate_macro_f1 = float("nan")
        self.samples = 0

    def _load_from_state_dict(self, state_dict: dict[str, Tensor], prefix: str, *args: object) -> None:
        # Runs saved before the ``weighted`` rule have no weights: they never chose it.
        state_dict.setdefault(prefix + "weights", torch.ones(len(self.modalities)))
        super()._load_from_state_dict(state_dict, prefix, *args)  # type: ignore[arg-type]

    @property
    def chosen(self) -> str:
        return self.names[int(self.rule)]

    def forward(
        self,
        logits: Mapping[str, Tensor],
        present: Mapping[str, Tensor],
        head: Tensor | None = None,
        own: Tensor | None = None,
    ) -> Tensor:
        ordered = {m: logits[m] for m in self.modalities}
        fitted = Fitted((self.weight, self.bias), self.weights)
        return apply_rule(self.chosen, ordered, present, fitted, head, own, self.fallback)

    def fit(
        self,
        logits: Mapping[str, Tensor],
        present: Mapping[str, Tensor],
        label: Tensor,
        seed: int,
        head: Tensor | None = None,
        own: Tensor | None = None,
        index: Tensor | None = None,
        workers: int = 1,
    ) -> Choice:
        """Choose the rule on held-out outputs and keep its fitted weights. With the samples'
        ``index`` they are first put in sample order, so that the folds of the choice, and the
        choice, are the same whatever order the outputs were gathered in (one process or several).
        ``workers``: threads fitting folds at once (:func:`choose_rule`)."""
        order = index.cpu().argsort() if index is not None else torch.arange(len(label))

        def host(x: Tensor) -> Tensor:
            return x.detach().cpu()[order]

        choice = choose_rule(
            {m: host(logits[m]) for m in self.modalities},
            {m: host(present[m]) for m in self.modalities},
            host(label),
            self.bias.numel(),
            head=None if head is None else host(head),
            own=None if own is None else host(own),
            rules=self.rules,
            seed=seed,
            workers=workers,
        )
        self.rule.fill_(self.names.index(choice.rule))
        self.weight.copy_(choice.fitted.stacked[0])
        self.bias.copy_(choice.fitted.stacked[1])
        self.weights.copy_(choice.fitted.weights)
        self.scores = dict(choice.scores)
        self.estimate = choice.estimate
        self.estimate_macro_f1 = choice.estimate_macro_f1
        self.samples = choice.samples
        return choice
