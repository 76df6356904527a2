"""MLA: alternating unimodal adaptation with a shared head (Zhang, Yoon, Bansal, Yao, CVPR 2024).

Training is a sequence of unimodal steps. A step for modality m encodes m's samples, scores them
with the ONE head shared by all modalities, takes the cross-entropy, and updates m's encoder and
the head only: the other encoders get no gradient and, because gradients are set to None, no
momentum or weight decay either. Head gradient modification (:mod:`altmodal.projection`) keeps
the head from forgetting what the other modalities taught it. At test time each present
modality's prediction is scored by its entropy and the predictions are fused with per-sample
weights (:func:`altmodal.fusion.entropy_weights`).

Test-time fusion: with ``test_fusion="auto"`` (presets ``altmodal`` and ``fast``) the rule is
chosen after training among the candidates of :mod:`altmodal.fusion_choice` (the paper's entropy
weights, a logit average, a weighted product of experts, a fusion head on detached features, a
stacked classifier, each modality alone): by ``fast`` on the run's own validation split, by the
default ``altmodal`` on the out-of-fold predictions of five cross-fitted models
(:mod:`altmodal.bagging`, ``--folds 5``). The entropy rule stays in use during training, so the
best epoch is selected as in the paper. ``--preset paper`` (``test_fusion="entropy"``, one model,
100 epochs) is the paper's method exactly.

HGM under momentum: the paper projects the head's gradient; momentum and weight decay then carry
unprojected past updates into the head. The default projects the optimizer's whole update of the
head instead (``projection_target="update"``; the paper's preset keeps ``gradient``), so a step
moves the head's answer on the protected features by exactly what P allows; ``forget`` lets P
restart each epoch or decay (the paper's P only shrinks); ``projection_stats`` records per epoch
how much of the update survives and how far the other modalities' outputs moved.

Granularity: ``cycle="batch"`` (default, as the reference code) runs the steps of every modality
one after the other on each mini-batch; ``cycle="iteration"`` takes one modality per mini-batch.
Order: fixed (the modality order given), reversed, or random per cycle. Samples without modality
m take no part in m's step; when no sample of the (global) batch has m, m's step is skipped.

Differences from the reference code (``--preset reference-code`` reproduces them all):
- its projection never runs (a parameter-name check that never matches); ours does
  (``--preset reference-code-as-released`` turns it off to match the published behaviour);
- it uses the current batch's mean feature, alpha = 0.1 ** (b/B + 1), Frobenius-normalised P and
  skips the first step; our defaults follow the paper (a running mean as the data mean, a
  constant alpha, plain OWM);
- its test-time fusion takes the softmax over the BATCH axis and sums over the batch, one weight
  per modality per test batch; ours is per sample, so a sample's prediction does not depend on
  the batch it is in;
- its shared optimizer applies momentum and weight decay to encoders stepped earlier in the same
  batch (zeroed, not cleared, gradients): ``leak_optimizer`` reproduces it;
- its fixed-weight fusion weights: the stored code's default is 0.5/0.5 for two modalities (the
  specification names 0.55/0.45, our default for ``test_fusion=fixed``) and 0.35/0.25/0.40 for
  audio/visual/text.
``projection_method`` picks the head projection: ``owm`` (the paper's HGM, default), ``ogd``
(OGD-ALL: remove from the head's gradient, weight and bias, the span of the OTHER modalities'
stored features, refreshed every epoch or every ``ogd_refresh`` head steps) or ``pca-ogd`` (the
same against the top uncentered principal directions of a pool of each modality's recent
features); see :mod:`altmodal.basis_projection`. The features a step stores are gathered from
every process and ordered by sample index, so the memories are the same on every process. Caveat: the
OGD guarantee (the other modalities' stored logits do not move) is exact only for plain SGD on
the head; momentum mixes steps projected against different bases and weight decay shrinks every
direction, so with the paper's momentum 0.9 and weight decay 1e-4 it holds approximately.
``heads="separate"`` gives each modality its own head (same alternation and fusion), to measure
what sharing the head contributes; there is nothing for HGM to protect then, so it is off.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from altmodal.basis_projection import FeatureBasisProjector
from altmodal.config import option, require
from altmodal.data.batch import Batch, spread_rows
from altmodal.data.dataset import Splits
from altmodal.fusion import ConcatHead, batch_entropy_weights, combine, entropy_weights, fixed_weights
from altmodal.fusion_choice import ChosenFusion
from altmodal.model import evaluating
from altmodal.projection import HeadProjector
from altmodal.strategies.base import DataSpec, StepOutput, Strategy

ONE_RUN: dict[str, Any] = {"folds": 1, "patience": 0}
"""What the paper's and the reference code's presets set outside MLA's options: one model, trained
every epoch (the released code trains 100 epochs and keeps the best)."""
PAPER: dict[str, Any] = {
    **ONE_RUN,
    "test_fusion": "entropy",
    "fusion_head": False,
    "projection_target": "gradient",
    "forget": "never",
}
REFERENCE_CODE: dict[str, Any] = {
    **ONE_RUN,
    "projection_target": "gradient",
    "forget": "never",
    "h_source": "batch",
    "alpha_schedule": "reference",
    "normalize_p": True,
    "skip_first": True,
    "test_fusion": "batch-entropy",
    "leak_optimizer": True,
}


NEEDS_PROJECTION = ("projection", bool, "with --no-projection (HGM off); drop one of the two")
"""What the options of HGM need (:func:`altmodal.settings.check_given`): the projection on."""


@dataclass(frozen=True)
class MLAOptions:
    """MLA's options; ``preset`` sets several at once and explicit settings override it."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "altmodal": {"folds": 5, "patience_rule": "relative"},
        "fast": {"folds": 1},
        "paper": PAPER,
        "reference-code": REFERENCE_CODE,
        "reference-code-as-released": {**REFERENCE_CODE, "projection": False},
    }

    preset: Literal["altmodal", "fast", "paper", "reference-code", "reference-code-as-released"] = option(
        "altmodal",
        "altmodal: 5 cross-fitted models (--folds 5, five times the training of one run, each stopped by the "
        "relative --patience-rule), the fusion chosen on their out-of-fold predictions, the head's whole update "
        "projected; fast: the same as one model whose "
        "validation split chooses the fusion (--folds 1); paper: the paper's equations, one model trained every "
        "epoch; reference-code: every behaviour of the published code; reference-code-as-released: the same "
        "with the projection never applied, as that code runs",
    )
    cycle: Literal["batch", "iteration"] = option(
        "batch", "batch: every modality steps on each mini-batch; iteration: one modality per mini-batch"
    )
    order: Literal["fixed", "reversed", "random"] = option("fixed", "modality order within a cycle")
    heads: Literal["shared", "separate"] = option("shared", "one head shared by all modalities, or one each")
    projection: bool = option(True, "head gradient modification (HGM) on the shared head")
    projection_method: Literal["owm", "ogd", "pca-ogd"] = option(
        "owm",
        "HGM: OWM (the paper), OGD-ALL or PCA-OGD against the other modalities' feature bases",
        needs=NEEDS_PROJECTION,
    )
    ogd_memory: int = option(
        0, "OGD: features stored per modality (0: (d+1) // (2 (M-1)), half the head's room)", needs=NEEDS_PROJECTION
    )
    pca_pool: int = option(1000, "PCA-OGD: recent features pooled per modality", needs=NEEDS_PROJECTION)
    pca_k: int = option(0, "PCA-OGD: most directions per modality (0: (d+1) // (2 (M-1)))", needs=NEEDS_PROJECTION)
    pca_energy: float = option(0.99, "PCA-OGD: share of the pool's energy the directions reach", needs=NEEDS_PROJECTION)
    ogd_refresh: int = option(
        0, "OGD/PCA-OGD: recompute the bases every this many head steps (0: every epoch)", needs=NEEDS_PROJECTION
    )
    h_source: Literal["running", "batch"] = option(
        "running",
        "HGM feature vector: running mean of the modality's features, or the batch mean",
        needs=NEEDS_PROJECTION,
    )
    h_momentum: float = option(0.9, "decay of the running mean feature per step", needs=NEEDS_PROJECTION)
    alpha: float = option(0.1, "HGM regulariser alpha (alpha_schedule=constant)", needs=NEEDS_PROJECTION)
    alpha_schedule: Literal["constant", "reference"] = option(
        "constant", "constant alpha, or the reference code's 0.1**(b/B+1) within each epoch", needs=NEEDS_PROJECTION
    )
    normalize_p: bool = option(
        False, "divide P by its Frobenius norm after each update (reference code)", needs=NEEDS_PROJECTION
    )
    projection_mode: Literal["replace", "add"] = option(
        "replace",
        "replace the head gradient by its projection (OWM), or add the projection to it",
        needs=NEEDS_PROJECTION,
    )
    skip_first: bool = option(False, "leave the very first step unprojected (reference code)", needs=NEEDS_PROJECTION)
    projection_target: Literal["gradient", "update"] = option(
        "update",
        "HGM projects the head's gradient (the paper; momentum and weight decay then move the head past the "
        "projection) or the optimizer's whole update of the head (the projection's guarantee under any optimizer)",
        needs=NEEDS_PROJECTION,
    )
    forget: Literal["never", "epoch", "decay"] = option(
        "never",
        "HGM's P: never forgets (the paper: the head's room shrinks with every step), restarts at I each epoch, "
        "or decays towards I (a feature's protection halves every forget_half_life epochs)",
        needs=NEEDS_PROJECTION,
    )
    forget_half_life: float = option(
        1.0, "forget=decay: epochs in which a feature's protection halves", needs=NEEDS_PROJECTION
    )
    projection_stats: bool = option(
        False,
        "record per epoch how much of the head's update survives HGM and how far the other modalities' outputs "
        "move against what the projection allows (history columns hgm_*; costs a few operations per step)",
        needs=NEEDS_PROJECTION,
    )
    leak_optimizer: bool = option(
        False, "apply momentum and weight decay to encoders stepped earlier in the batch (reference code)"
    )
    test_fusion: Literal["auto", "entropy", "fixed", "batch-entropy"] = option(
        "auto",
        "auto: entropy, mean or stacked fusion, chosen after training on the validation split; entropy: the "
        "paper's per-sample dynamic fusion; fixed: fusion_weights; batch-entropy: the reference code's",
    )
    fusion_weights: tuple[float, ...] = option(
        (), "fixed fusion weights per modality (default 0.55,0.45 for two; 0.35,0.25,0.40 for three; else equal)"
    )
    fusion_space: Literal["logits", "probs"] = option("logits", "fuse logits or probabilities")
    fusion_head: bool = option(
        True,
        "with test_fusion=auto: also train a linear fusion head on the DETACHED features (it never changes "
        "the encoders) as one more candidate rule",
    )

    def __post_init__(self) -> None:
        require(0 <= self.h_momentum < 1, "h_momentum", self.h_momentum, "in [0, 1)")
        require(self.alpha > 0, "alpha", self.alpha, "positive")
        require(self.forget_half_life > 0, "forget_half_life", self.forget_half_life, "positive")
        for name in ("ogd_memory", "pca_k", "ogd_refresh"):
            require(getattr(self, name) >= 0, name, getattr(self, name), "non-negative")
        require(self.pca_pool >= 1, "pca_pool", self.pca_pool, "at least 1")
        require(0 < self.pca_energy <= 1, "pca_energy", self.pca_energy, "in (0, 1]")
        weights = self.fusion_weights
        require(
            all(w >= 0 for w in weights) and (not weights or sum(weights) > 0),
            "fusion_weights",
            weights,
            "non-negative with a positive sum",
        )


def default_weights(count: int) -> tuple[float, ...]:
    if count == 2:
        return (0.55, 0.45)
    if count == 3:
        return (0.35, 0.25, 0.40)
    return (1.0,) * count


class MLA(Strategy):
    name = "mla"
    options_class = MLAOptions

    def __init__(self, encoders: Mapping[str, nn.Module], spec: DataSpec, options: MLAOptions, dim: int):
        super().__init__(encoders, spec, options)
        if options.heads == "shared":
            head = nn.Linear(dim, spec.num_classes)
            self.heads = nn.ModuleDict({"shared": head})
        else:
            self.heads = nn.ModuleDict({m: nn.Linear(dim, spec.num_classes) for m in self.modalities})
        self.projector: HeadProjector | FeatureBasisProjector | None = None
        if options.projection and options.heads == "shared" and options.projection_method != "owm":
            self.projector = basis_projector(self.head("shared"), self.modalities, options)
        elif options.projection and options.heads == "shared":
            self.projector = HeadProjector(
                self.head("shared"),
                self.modalities,
                h_source=options.h_source,
                momentum=options.h_momentum,
                alpha=options.alpha if options.alpha_schedule == "constant" else None,
                normalize=options.normalize_p,
                mode=options.projection_mode,
                skip_first=options.skip_first,
                target=options.projection_target,
            )
        weights = options.fusion_weights or default_weights(len(self.modalities))
        if len(weights) != len(self.modalities):
            raise ValueError(
                f"mla: {len(weights)} fusion weights for {len(self.modalities)} modalities "
                f"({', '.join(self.modalities)})"
            )
        self.fusion_weights = tuple(weights)
        auto = options.test_fusion == "auto"
        self.chosen_fusion = ChosenFusion(self.modalities, spec.num_classes) if auto else None
        self._stats: dict[str, list[Tensor]] = {}
        self.fusion_head = ConcatHead(self.modalities, dim, spec.num_classes) if auto and options.fusion_head else None

    def on_epoch_start(self, epoch: int) -> None:
        if isinstance(self.projector, FeatureBasisProjector):
            self.projector.on_epoch_start()
        elif self.projector is not None and self.options.forget == "epoch":
            self.projector.reset()

    def head(self, modality: str) -> nn.Linear:
        return self.heads["shared" if "shared" in self.heads else modality]  # type: ignore[return-value]

    # ----- prediction ------------------------------------------------------------------------
    def unimodal_logits(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {m: self.head(m)(features[m]) for m in self.modalities}

    def fuse(self, features: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Tensor:
        logits = self.unimodal_logits(features)
        kind = self.options.test_fusion
        if self.chosen_fusion is not None:
            head = self.fusion_head(features) if self.fusion_head is not None else None
            return self.chosen_fusion(logits, present, head)  # type: ignore[no-any-return]
        if kind == "entropy":
            weights = entropy_weights(logits, present)
        elif kind == "fixed":
            weights = fixed_weights(self.fusion_weights, self.modalities, present)
        else:
            weights = batch_entropy_weights(logits, present)
        return combine(logits, weights, self.options.fusion_space)

    def on_fit_end(self, splits: Splits) -> None:
        if self.chosen_fusion is not None:
            val = self.collect(splits.val, all_subsets=False)
            head = None
            if self.fusion_head is not None:
                with torch.no_grad():
                    head = self.fusion_head({m: f.to(self.device) for m, f in val.features.items()})
            self.chosen_fusion.fit(val.unimodal, val.present, val.label, self.config.seed, head, index=val.index)

    def summary(self) -> dict[str, Any]:
        if self.chosen_fusion is None:
            return {}
        fusion = self.chosen_fusion
        return {
            "fusion": fusion.chosen,
            "fusion_scores": fusion.scores,
            "fusion_estimate": fusion.estimate,
            "fusion_estimate_macro_f1": fusion.estimate_macro_f1,
            "samples": fusion.samples,
        }

    # ----- training ----------------------------------------------------------------------------
    def step_order(self) -> list[str]:
        """The modalities that step on the current mini-batch, in order."""
        order = list(self.modalities)
        if self.options.order == "reversed":
            order.reverse()
        if self.options.cycle == "iteration":  # a cycle is M consecutive steps, across epochs
            step = self.epoch * self.batches_per_epoch + self.batch_index
            cycle: tuple[int, ...] = (step // len(order),)
        else:  # a cycle is one mini-batch
            cycle = (self.epoch, self.batch_index)
        if self.options.order == "random":
            rng = np.random.default_rng([self.config.seed, *cycle, 17])
            order = [order[i] for i in rng.permutation(len(order))]
        if self.options.cycle == "iteration":
            return [order[step % len(order)]]
        return order

    def training_step(self, batch: Batch) -> StepOutput:
        """One unimodal step per modality in :meth:`step_order`. Which samples take part, and
        whether a modality has any in the global batch, is read from the batch's host-side
        presence masks and counts: nothing in the step waits for the device.

        The fusion head (``test_fusion=auto``) learns in the same backward pass and optimizer
        step as the last modality: its loss reads detached features only and its parameters are
        its own, so the gradients and updates are those of a separate step (with ``grad_clip``,
        whose norm would mix the two, it keeps a step of its own)."""
        losses: list[Tensor] = []
        report: dict[str, tuple[Tensor, Tensor]] = {}
        stepped: list[str] = []
        seen: dict[str, Tensor] = {}  # modality -> its step's detached (n, d) features
        counts = {m: self.global_count(batch, m) for m in self.step_order()}  # samples with m, global batch
        order = [m for m, count in counts.items() if count > 0]
        fusion_pending = self.fusion_head is not None
        for m in order:
            sub = batch.select(batch.rows(m))
            features = self.encode(sub, [m])[m]  # (n, d): every row of sub has m
            head = self.head(m)
            logits = head(features)
            summed = F.cross_entropy(logits, sub.label, reduction="none" if self.weighs else "sum")
            loss = self.weighted(summed, sub.index).sum() / counts[m]
            params = [*self.encoders[m].parameters(), *head.parameters()]
            if self.options.leak_optimizer:
                params += [p for other in stepped for p in self.encoders[other].parameters()]
            seen[m] = features.detach()
            edit, after = self._hgm(m, head, seen[m], counts[m], stepped, sub.index)
            optimised = loss
            if fusion_pending and m == order[-1] and self.config.grad_clip == 0:
                optimised = loss + self._fusion_loss(batch, seen)
                params += self.fusion_head.parameters()  # type: ignore[union-attr]
                fusion_pending = False
            self.optimize(optimised, params, edit=edit, after=after)
            stepped.append(m)
            losses.append(loss.detach())
            report[m] = (logits.detach(), sub.label)
        if fusion_pending:
            self.optimize(self._fusion_loss(batch, seen), list(self.fusion_head.parameters()))  # type: ignore[union-attr]
        total = functools.reduce(torch.add, losses) if losses else torch.zeros((), device=self.device)
        extras = {f"hgm_{k}": torch.stack(v).mean() for k, v in self._stats.items()}
        self._stats = {}
        return StepOutput(total, report, extras)

    def _fusion_loss(self, batch: Batch, seen: Mapping[str, Tensor]) -> Tensor:
        """The fusion head's loss on the batch's detached features: those of the modality steps
        (absent rows zero), and, for a modality that did not step on this batch (one modality
        per iteration), its encoder's output without gradients, in evaluation mode (an encoder
        that did not step keeps its normalisation statistics)."""
        others = [m for m in self.modalities if m not in seen]
        features: dict[str, Tensor] = {}
        if others:
            with torch.no_grad(), evaluating([self.encoders[m] for m in others]):
                features = self.encode(batch, others)
        for m, rows in seen.items():
            features[m] = spread_rows(rows, batch.index_of(m), len(batch.label))
        every = any(bool(batch.rows(m).all()) for m in self.modalities)  # on the host: every row is scored
        scored = None if every else torch.stack([batch.present[m] for m in self.modalities]).any(dim=0)
        assert self.fusion_head is not None
        return self.cross_entropy(self.fusion_head(features), batch.label, scored)

    def _hgm(
        self,
        modality: str,
        head: nn.Linear,
        features: Tensor,
        count: int | Tensor,
        stepped: list[str],
        index: Tensor | None = None,
    ) -> tuple[Callable[[], None], Callable[[], None] | None]:
        """The gradient edit of m's step and what follows its optimizer step: the projector's
        ``before_step`` and ``after_step`` (:mod:`altmodal.projection`; they project the head's
        gradient or its whole update, and keep the statistics), fed the global mean of the step's
        ``count`` features in float32 (OWM) or the step's features of every process in sample
        order (OGD/PCA-OGD); with ``leak_optimizer`` the edit hands zero gradients to the
        encoders stepped earlier in the batch."""
        projector, opts = self.projector, self.options
        kept: dict[str, Tensor] = {}  # the head ahead of the step, and what the statistics need

        def edit() -> None:
            if isinstance(projector, FeatureBasisProjector):
                rows = self.dist.gather(features)
                order = self.dist.gather(index).argsort() if index is not None else slice(None)
                kept.update(projector.before_step(head, modality, rows[order]))
            elif projector is not None:
                total = features.float().sum(dim=0)
                mean = (self.dist.sum(total) if self.dist.active else total) / count
                if opts.forget == "decay":
                    projector.relax(self._decay_keep())
                alpha = projector.alpha_for(self.batch_index, self.batches_per_epoch)
                stats = opts.projection_stats
                kept.update(projector.before_step(head.weight, modality, mean, alpha, self.optimizer, stats))
            if opts.leak_optimizer:
                for other in stepped:
                    for p in self.encoders[other].parameters():
                        p.grad = torch.zeros_like(p)

        def after() -> None:
            if isinstance(projector, FeatureBasisProjector):
                projector.after_step(head, modality, kept)
            elif projector is not None:
                stats = projector.after_step(head.weight, modality, kept, self.optimizer, opts.projection_stats)
                for key, value in stats.items():
                    self._stats.setdefault(key, []).append(value.detach())

        needs_after = projector is not None and (opts.projection_target == "update" or opts.projection_stats)
        return edit, after if needs_after else None

    def _decay_keep(self) -> float:
        """``forget="decay"``: the factor that halves a feature's protection every half-life."""
        per_batch = len(self.modalities) if self.options.cycle == "batch" else 1
        updates = self.options.forget_half_life * self.batches_per_epoch * per_batch
        return float(0.5 ** (1 / max(updates, 1.0)))


def basis_projector(head: nn.Linear, modalities: list[str], options: MLAOptions) -> FeatureBasisProjector:
    """The OGD / PCA-OGD projector of ``options``; a basis size of 0 becomes (d+1) // (2 (M-1)).

    Raises:
        ValueError: the other modalities' bases could fill the head's d+1 directions.
    """
    room, others = head.in_features + 1, max(len(modalities) - 1, 1)
    auto = room // (2 * others)
    if options.projection_method == "ogd":
        size, flag, value = options.ogd_memory or auto, "--ogd-memory", options.ogd_memory
    else:
        size, flag, value = options.pca_k or auto, "--pca-k", options.pca_k
    if others * size >= room:
        raise ValueError(
            f"mla: {flag} {value} leaves no room: {others} other modalities x {size} directions must stay "
            f"below the head's d+1 = {room}; lower {flag}"
        )
    return FeatureBasisProjector(
        head,
        modalities,
        method=options.projection_method,
        memory=size if options.projection_method == "ogd" else options.pca_pool,
        k=size,
        energy=options.pca_energy,
        refresh_every=options.ogd_refresh,
        target=options.projection_target,
    )
