"""UMT, Uni-Modal Teacher (Du et al., "On Uni-Modal Feature Learning in Supervised Multi-Modal
Learning", ICML 2023).

Joint late-fusion training under-learns each modality's own features. UMT first trains one
teacher per modality alone (stage 1), then trains the late-fusion student with the fused
cross-entropy plus a distillation that pulls each student encoder's features towards its frozen
teacher's (stage 2):

    L = CE(F(z_1..z_M), y) + lambda * sum_m mean over samples with m of ||z_m - sg(phi_m^T(x_m))||^2 / d

Stage 1 is exactly a run of the ``unimodal`` strategy per modality (:func:`~altmodal.strategies.ume.train_alone`:
the same loop, its modality only, best epoch on validation), for ``umt_teacher_epochs`` epochs
(default: as many as the student). It runs once, before the student's first epoch; the teachers
then sit in the model's state (frozen, in evaluation mode), so a resumed run does not train them
again. A run interrupted during stage 1 starts stage 1 afresh, with the same result. The cost of
both stages is in history.csv: ``seconds`` per student epoch, ``umt_stage1_seconds`` for all
teachers together, and each teacher's best validation accuracy.

Choices not verified against the paper's text: lambda = 10 and a student trained from scratch
follow the third-party BalanceBenchmark (``umt_student_init=teachers`` starts the student's
encoders from the teachers'); unlike it, we distil in every epoch (it stops after 80 of 100);
the teachers start from the student's initial weights (a copy). The paper's
choice between UMT and UME per task is not made here: ``ume`` is its own strategy. Unimodal
accuracy is the head slice of the student's fused head, as for joint training (no linear probe).
Missing modalities: a sample distils only the modalities it has; each teacher trains on the
samples that have its modality. Every process trains identical teachers (no per-process state).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from altmodal.config import option, require
from altmodal.data.batch import Batch
from altmodal.data.dataset import Splits
from altmodal.strategies.base import DataSpec, StepOutput
from altmodal.strategies.joint import Joint, JointOptions, present_rows
from altmodal.strategies.ume import Unimodal, train_alone

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UMTOptions(JointOptions):
    umt_weight: float = option(10.0, "UMT: weight lambda of the feature distillation")
    umt_teacher_epochs: int = option(0, "UMT: epochs of each teacher's training in stage 1 (0: --epochs)")
    umt_student_init: Literal["scratch", "teachers"] = option(
        "scratch", "UMT: student encoders from scratch or from the trained teachers"
    )

    def __post_init__(self) -> None:
        require(self.umt_weight >= 0, "umt_weight", self.umt_weight, "non-negative")
        require(self.umt_teacher_epochs >= 0, "umt_teacher_epochs", self.umt_teacher_epochs, "non-negative")


class UMT(Joint):
    name = "umt"
    options_class = UMTOptions
    teachers_ready: Tensor

    def __init__(self, encoders: Mapping[str, nn.Module], spec: DataSpec, options: UMTOptions, dim: int):
        super().__init__(encoders, spec, options, dim)
        self.teachers = nn.ModuleDict(
            {
                m: Unimodal(
                    {m: copy.deepcopy(encoders[m])}, DataSpec((m,), spec.num_classes, spec.num_samples), None, dim
                )
                for m in self.modalities
            }
        )
        self.teachers.requires_grad_(False)  # not in the student's optimizer
        self.register_buffer("teachers_ready", torch.zeros((), dtype=torch.bool))
        self.stage1: dict[str, float] = {}

    def teacher(self, modality: str) -> Unimodal:
        return self.teachers[modality]  # type: ignore[return-value]

    def train(self, mode: bool = True) -> UMT:
        super().train(mode)
        self.teachers.eval()  # frozen: their normalisation statistics stay as trained
        return self

    def on_fit_start(self, splits: Splits) -> None:
        """Stage 1: train every teacher alone (skipped when the state already holds them)."""
        if bool(self.teachers_ready):
            return
        opts: UMTOptions = self.options
        config = dataclasses.replace(self.config, epochs=opts.umt_teacher_epochs or self.config.epochs)
        started = time.perf_counter()
        for m in self.modalities:
            teacher = self.teacher(m)
            teacher.requires_grad_(True)
            best = train_alone(self.loop.spawn(config), teacher, splits)
            teacher.requires_grad_(False)
            self.stage1[f"umt_teacher_val_accuracy_{m}"] = best["val_accuracy"]
            log.info(
                "umt: teacher %s trained %d epochs, validation accuracy %.4f", m, config.epochs, best["val_accuracy"]
            )
            if opts.umt_student_init == "teachers":
                self.encoders[m].load_state_dict(teacher.encoders[m].state_dict())
        self.stage1["umt_stage1_seconds"] = time.perf_counter() - started
        self.teachers_ready.fill_(True)
        self.train()

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch_extras.update(self.stage1)

    def training_step(self, batch: Batch) -> StepOutput:
        features = self.encode(batch)
        with torch.no_grad():
            targets = {m: self.teacher(m).encode(batch)[m] for m in self.modalities}
        distill = torch.stack(
            [self.mean_loss(((features[m] - targets[m]) ** 2).mean(dim=1), batch.present[m]) for m in self.modalities]
        )
        fused = self.cross_entropy(self.head(features), batch.label)
        loss = fused + self.options.umt_weight * distill.sum()
        self.optimize(loss)
        unimodal = {m: v.detach() for m, v in self.unimodal_logits(features).items()}
        report = self.dist.sum(distill.detach())  # left on the device; the loop reads it per epoch
        extras = {f"umt_distill_{m}": report[j] for j, m in enumerate(self.modalities)}
        return StepOutput(loss.detach(), present_rows(unimodal, batch), extras)

    def training_extras(self) -> dict[str, Any]:
        return {"umt": dict(self.stage1)}

    def load_training_extras(self, state: Mapping[str, Any]) -> None:
        self.stage1 = dict(state["umt"])
