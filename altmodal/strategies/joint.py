"""Joint training with late fusion: every encoder and one fusion head, one loss on the fused logits.

The standard multimodal baseline, and the setting in which modality laziness appears: the
modality that lowers the loss fastest dominates and the other encoders stay under-trained
(method.md section 1). Fusion modules: concat (default), sum, FiLM, gated (see
:mod:`altmodal.fusion`). An absent modality enters the head as its encoder's output for the zero
input (``--absent zero-inputs``, the default: the paper's code zero-fills absent inputs and still
runs them through the encoder, so the fused loss's gradient reaches the encoder through those
rows too), or as zero features with the encoder skipped (``zero-features``: no gradient from
absent rows).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor, nn

from altmodal.config import option
from altmodal.data.batch import Batch
from altmodal.fusion import build_fusion_head
from altmodal.strategies.base import DataSpec, StepOutput, Strategy


@dataclass(frozen=True)
class JointOptions:
    fusion: Literal["concat", "sum", "film", "gated"] = option("concat", "late-fusion module of joint training")


class Joint(Strategy):
    name = "joint"
    options_class = JointOptions

    def __init__(self, encoders: Mapping[str, nn.Module], spec: DataSpec, options: Any, dim: int):
        super().__init__(encoders, spec, options)
        self.head = build_fusion_head(options.fusion, self.modalities, dim, spec.num_classes)

    def unimodal_logits(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return self.head.unimodal(features)

    def fuse(self, features: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Tensor:
        return self.head(features)  # type: ignore[no-any-return]

    def training_step(self, batch: Batch) -> StepOutput:
        features = self.encode(batch)
        loss = self.cross_entropy(self.head(features), batch.label)
        unimodal = {m: v.detach() for m, v in self.unimodal_logits(features).items()}
        edit, extras = self.gradient_edit(unimodal, batch)
        self.optimize(loss, edit=edit)
        return StepOutput(loss.detach(), present_rows(unimodal, batch), extras)

    def gradient_edit(
        self, unimodal: Mapping[str, Tensor], batch: Batch
    ) -> tuple[Callable[[], None] | None, dict[str, Tensor]]:
        """A function that edits the gradients between backward and step (OGM-GE) or None, and
        numbers for the history."""
        return None, {}


def present_rows(logits: Mapping[str, Tensor], batch: Batch) -> dict[str, tuple[Tensor, Tensor]]:
    """modality -> (logits, labels) of the samples that have the modality (rows chosen on the
    host, so the step does not wait for the device)."""
    out: dict[str, tuple[Tensor, Tensor]] = {}
    for m, v in logits.items():
        index = batch.index_of(m)
        out[m] = (v, batch.label) if index is None else (v.index_select(0, index), batch.label.index_select(0, index))
    return out
