"""Cross-fitting: K members of one strategy, each trained on K-1 folds, predicting as one model.

With ``--folds K`` the run's development samples (its training and validation splits) are cut
into K stratified folds (:func:`altmodal.data.splits.cross_fit_split`). Member k trains on the
other folds, less a validation share that selects its epoch (and stops it early), and predicts
fold k, which it never saw: the out-of-fold predictions cover every development sample once, from
models that did not train on it. They choose the test-time fusion among every candidate of
:mod:`altmodal.fusion_choice`, all scored alike on all of the development samples instead of a
small validation split, and they estimate the chosen model's accuracy honestly. At test time each
modality's log-probabilities are averaged over the members (bagging) and fused by the chosen rule.

Cost: K trainings, each on (K-1)/K of the development samples less its validation share, and K
encoder passes per prediction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from altmodal.data.batch import Batch
from altmodal.data.dataset import MultimodalDataset
from altmodal.fusion_choice import ChosenFusion
from altmodal.learners import JOINED, Learners
from altmodal.metrics import Outputs
from altmodal.model import DataSpec, Model


def saved_learners(card: Mapping[str, Any], spec: DataSpec) -> Learners | None:
    """The (unfitted) learners a saved run's model card lists (``learners``), to load into."""
    names = card.get("learners", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"model.json: 'learners' is {names!r}, not a list of learner names")
    return Learners(names, spec.modalities, spec.num_classes) if names else None


def log_probs(logits: Tensor) -> Tensor:
    return torch.log_softmax(logits.float(), dim=1)


class Bag(Model):
    """The members of a cross-fitted run as one model: features are the members' side by side,
    each modality's prediction is the mean of the members' log-probabilities, and the fusion is
    the rule chosen on the out-of-fold predictions (``fusion``)."""

    name = "bag"

    def __init__(self, members: Sequence[Model], spec: DataSpec, learners: Learners | None = None):
        super().__init__({}, spec)
        self.members = nn.ModuleList(members)
        first = members[0]
        self.widths = {m: first.feature_width(m) for m in spec.modalities}
        self.learners = learners if learners is not None and learners.names else None
        """The classical learners beside the networks (:mod:`altmodal.learners`), or None."""
        self.experts = [*spec.modalities, *(self.learners.names if self.learners is not None else [])]
        """What the fusion combines: each modality's network prediction, then each learner's."""
        fallback = "entropy" if self.learners is None else "weighted"
        self.fusion = ChosenFusion(self.experts, spec.num_classes, fallback=fallback)
        self.selection: dict[str, Any] = {}
        """The choice as metrics.json reports it (after :meth:`choose`)."""
        self.held_out: Outputs | None = None
        """The out-of-fold predictions, fused by the chosen rule (after :meth:`choose`)."""

    @property
    def modalities(self) -> list[str]:
        return list(self.spec.modalities)

    @property
    def strategies(self) -> list[Model]:
        return list(self.members)  # type: ignore[arg-type]

    # ----- the model -------------------------------------------------------------------------
    def encode(self, batch: Batch, only: Sequence[str] | None = None) -> dict[str, Tensor]:
        """modality -> (B, K*d) the members' features side by side, followed, with learners, by
        the (B, C) log-probabilities of the learners that read that modality alone and, after the
        first modality's, those of the learners on the joined features (a learner's features
        are its answer)."""
        parts = [member.encode(batch, only) for member in self.strategies]
        out = {m: torch.cat([p[m] for p in parts], dim=1) for m in (self.modalities if only is None else only)}
        if self.learners is None:
            return out
        answers = self.learners.log_probs(batch.inputs, batch.present)
        return {m: torch.cat([out[m], *(answers[n].to(out[m]) for n in self.carried(m))], dim=1) for m in out}

    def carried(self, modality: str) -> list[str]:
        """The learners whose answers ride on ``modality``'s features (see :meth:`encode`)."""
        if self.learners is None:
            return []
        riders = [modality, JOINED] if modality == self.modalities[0] else [modality]
        return [n for n in self.learners.names if n.rpartition(":")[0] in riders]

    def absent_features(self, batch: Batch) -> dict[str, Tensor]:
        parts = [member.absent_features(batch) for member in self.strategies]
        out = {m: torch.cat([p[m] for p in parts], dim=1) for m in self.modalities}
        return {m: F.pad(f, (0, len(self.carried(m)) * self.num_classes)) for m, f in out.items()}

    def split(self, features: Mapping[str, Tensor]) -> list[dict[str, Tensor]]:
        """The (B, K*d) features cut into each member's (B, d)."""
        return [
            {m: features[m][:, k * self.widths[m] : (k + 1) * self.widths[m]] for m in self.modalities}
            for k in range(len(self.members))
        ]

    def answers(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """name -> (B, C) the learners' log-probabilities carried in ``features``."""
        out = {}
        for m in self.modalities:
            start = len(self.members) * self.widths[m]
            for i, name in enumerate(self.carried(m)):
                out[name] = features[m][:, start + i * self.num_classes : start + (i + 1) * self.num_classes]
        return out

    def collect(self, dataset: MultimodalDataset, all_subsets: bool = True) -> Outputs:
        """:meth:`Model.collect`, its features the networks' alone (the learners' answers cut off)."""
        out = super().collect(dataset, all_subsets)
        networks = {m: f[:, : len(self.members) * self.widths[m]] for m, f in out.features.items()}
        return dataclasses.replace(out, features=networks)

    def expert_present(self, present: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """expert -> (B,) whether it has what it reads."""
        extra = self.learners.present(present) if self.learners is not None else {}
        return {**{m: present[m] for m in self.modalities}, **extra}

    def member_outputs(
        self, member: Model, features: Mapping[str, Tensor], present: Mapping[str, Tensor]
    ) -> dict[str, Any]:
        """One member's log-probabilities: each modality's, its own fusion's and, where it has
        one, its fusion head's (what the candidate rules read)."""
        head = getattr(member, "fusion_head", None)
        return {
            "unimodal": {m: log_probs(v) for m, v in member.unimodal_logits(features).items()},
            "own": log_probs(member.fuse(features, present)),
            "head": log_probs(head(features)) if head is not None else None,
        }

    def averaged(self, features: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> dict[str, Any]:
        outs = [self.member_outputs(s, f, present) for s, f in zip(self.strategies, self.split(features))]

        def mean(values: Sequence[Tensor]) -> Tensor:
            return torch.stack(list(values)).mean(dim=0)

        heads = [o["head"] for o in outs]
        return {
            "unimodal": {m: mean([o["unimodal"][m] for o in outs]) for m in self.modalities},
            "own": mean([o["own"] for o in outs]),
            "head": mean(heads) if all(h is not None for h in heads) else None,
        }

    def unimodal_logits(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        outs = [
            {m: log_probs(v) for m, v in s.unimodal_logits(f).items()}
            for s, f in zip(self.strategies, self.split(features))
        ]
        return {m: torch.stack([o[m] for o in outs]).mean(dim=0) for m in self.modalities}

    def fuse(self, features: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Tensor:
        out = self.averaged(features, present)
        experts = {**out["unimodal"], **self.answers(features)}
        return self.fusion(experts, self.expert_present(present), out["head"], out["own"])  # type: ignore[no-any-return]

    # ----- the choice ------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        return {**self.selection, "members": [member.summary() for member in self.strategies]}

    @torch.no_grad()
    def choose(
        self,
        held_out: Sequence[tuple[Model, Outputs]],
        seed: int,
        answers: Sequence[Mapping[str, Tensor]] = (),
        workers: int = 1,
    ) -> None:
        """Choose the fusion on the members' out-of-fold outputs (pairs of a member and its
        outputs on the fold it never saw) and, with learners, their learners' ``answers`` on the
        same rows (name -> (n, C) log-probabilities, one table per member); keep the choice and
        the fused out-of-fold outputs. ``workers``: threads fitting the choice's folds at once."""
        parts: dict[str, list[Tensor]] = {}
        for k, (member, out) in enumerate(held_out):
            features = {m: f.to(self.device) for m, f in out.features.items()}
            present = {m: p.to(self.device) for m, p in out.present.items()}
            o = self.member_outputs(member, features, present)
            for name, value in (answers[k] if answers else {}).items():
                parts.setdefault(f"learner/{name}", []).append(value.float().cpu())
            for m in self.modalities:
                parts.setdefault(f"unimodal/{m}", []).append(o["unimodal"][m].cpu())
                parts.setdefault(f"present/{m}", []).append(out.present[m])
            parts.setdefault("own", []).append(o["own"].cpu())
            if o["head"] is not None:
                parts.setdefault("head", []).append(o["head"].cpu())
            parts.setdefault("label", []).append(out.label)
            parts.setdefault("index", []).append(out.index)
            for m in self.modalities:
                parts.setdefault(f"features/{m}", []).append(out.features[m])
        order = torch.cat(parts["index"]).argsort()  # sample order: the same choice in any number of processes
        cat = {k: torch.cat(v)[order] for k, v in parts.items()}  # (the choice's folds follow it)
        unimodal = {m: cat[f"unimodal/{m}"] for m in self.modalities}
        present = {m: cat[f"present/{m}"] for m in self.modalities}
        experts = {**unimodal, **{n: cat[f"learner/{n}"] for n in self.experts[len(self.modalities) :]}}
        head, own = cat.get("head"), cat["own"]
        choice = self.fusion.fit(experts, self.expert_present(present), cat["label"], seed, head, own, workers=workers)
        self.selection = {
            "fusion": choice.rule,
            "fusion_scores": choice.scores,
            "fusion_estimate": choice.estimate,
            "fusion_estimate_macro_f1": choice.estimate_macro_f1,
            "held_out": "out-of-fold",
            "samples": choice.samples,
        }
        self.held_out = Outputs(
            label=cat["label"],
            index=cat["index"],
            present=present,
            fused=self.fusion(experts, self.expert_present(present), head, own),
            unimodal=unimodal,
            features={m: cat[f"features/{m}"] for m in self.modalities},
        )
