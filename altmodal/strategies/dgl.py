"""DGL: disentangled gradient learning (Wei et al., ICCV 2025).

In joint late fusion the fused loss's gradient into one encoder is shrunk by the other
modalities' share of the logits. DGL cuts that gradient and replaces it: each encoder learns only
from its unimodal loss, where modality m's logits come from the SAME fusion head with every other
modality's features zeroed, u_m = F(0, ..., z_m, ..., 0) (for concat W_m z_m + b, the full
bias); the unimodal losses' gradient into the head is discarded. The head learns only from the
fused loss on detached features:

    L = CE(F(sg z_1, ..., sg z_M), y) + alpha * sum_m CE(F_sg(0, ..., z_m, ..., 0), y)

where F_sg is the head evaluated with detached parameters (``torch.func.functional_call``), so
one backward pass routes the fused loss to the head only and the unimodal losses to the encoders
only; the code's two backward passes (unimodal losses, discard the head's gradients, fused loss)
give the same gradients. A modality's unimodal prediction is u_m. An absent modality enters the
fused logits as its encoder's output for the zero input (``--absent zero-inputs``, the default, as
the paper's code) or as zeros (``zero-features``); either way the fused loss reaches only the head,
and absent samples leave u_m's loss. No state beyond the parameters, so processes and
resumed runs need nothing more. Cost: M extra head forwards, about 1.05x joint.

alpha = 4 (the paper's CREMA-D value; its code uses 2-3 on Kinetics-Sounds). The code clips the
global gradient norm to 40 before the step: ``dgl_clip=40`` (default off, as in the paper).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import functional_call

from altmodal.config import option, require
from altmodal.data.batch import Batch
from altmodal.fusion import each_alone
from altmodal.strategies.base import StepOutput
from altmodal.strategies.joint import Joint, JointOptions, present_rows
from altmodal.strategies.parts import unimodal_losses


@dataclass(frozen=True)
class DGLOptions(JointOptions):
    dgl_alpha: float = option(4.0, "weight alpha of the unimodal losses")
    dgl_clip: float = option(0.0, "clip the global gradient norm to this value before the step (0: off; code: 40)")

    def __post_init__(self) -> None:
        require(self.dgl_alpha > 0, "dgl_alpha", self.dgl_alpha, "positive")
        require(self.dgl_clip >= 0, "dgl_clip", self.dgl_clip, "non-negative")


class DGL(Joint):
    name = "dgl"
    options_class = DGLOptions

    def unimodal_logits(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return each_alone(self.head, features)

    def losses(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """DGL's loss (fused part reaches only the head, unimodal part only the encoders) and
        the unimodal logits u_m."""
        features = self.encode(batch)
        fused = self.head({m: f.detach() for m, f in features.items()})
        frozen = {name: p.detach() for name, p in self.head.named_parameters()}
        logits = each_alone(lambda f: functional_call(self.head, frozen, (f,)), features)
        unimodal: Tensor = sum(unimodal_losses(self, logits, batch).values())  # type: ignore[assignment]
        return self.cross_entropy(fused, batch.label) + self.options.dgl_alpha * unimodal, logits

    def training_step(self, batch: Batch) -> StepOutput:
        loss, logits = self.losses(batch)

        def clip_norm() -> None:
            torch.nn.utils.clip_grad_norm_(self.parameters(), self.options.dgl_clip)

        self.optimize(loss, edit=clip_norm if self.options.dgl_clip else None)
        return StepOutput(loss.detach(), present_rows({m: v.detach() for m, v in logits.items()}, batch))
