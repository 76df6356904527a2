"""ModDrop: modality dropout (Neverova, Wolf, Taylor & Nebout, "ModDrop: adaptive multi-modal
gesture recognition", TPAMI 2016).

Joint late fusion (:class:`~altmodal.strategies.joint.Joint`, any fusion head) in which every
training step drops whole modalities: each modality of each sample is dropped with probability
``moddrop_rate``, and a sample that would lose all the modalities it has keeps one, chosen
uniformly among them. A dropped modality enters the model as an absent one (``--absent``: its
encoder's output for the zero input, or zero features). The model thereby learns to predict from
every subset of its modalities, which is what missing modalities at test time ask of it. Nothing
is dropped at test time.

Departures from the paper (there is no official code): the paper drops the inputs of separately
pre-trained modality branches while fusing them gradually, with a dropping probability tuned per
channel; here the whole model trains from the start with one rate for every modality (0.5 by
default, our choice). A sample that would lose every modality it has keeps one, chosen uniformly
(ours: the paper lets a sample lose all its channels), so the subsets are not equally likely: at
rate p on two modalities a sample keeps both with probability (1 - p)^2 and each one alone with
p (1 - p) + p^2 / 2, that is 0.25 and 0.375 each at p = 0.5. The masks come from a generator
seeded by (seed, epoch, batch): the same on every process and after a resume. Cost: that of
joint training.
"""

from __future__ import annotations

from dataclasses import dataclass

from altmodal.config import option, require
from altmodal.data.batch import Batch
from altmodal.strategies.base import StepOutput
from altmodal.strategies.joint import Joint, JointOptions
from altmodal.strategies.parts import drop_modalities


@dataclass(frozen=True)
class ModDropOptions(JointOptions):
    moddrop_rate: float = option(0.5, "probability that a training step drops a modality of a sample")

    def __post_init__(self) -> None:
        require(0 <= self.moddrop_rate < 1, "moddrop_rate", self.moddrop_rate, "in [0, 1)")


class ModDrop(Joint):
    name = "moddrop"
    options_class = ModDropOptions

    def training_step(self, batch: Batch) -> StepOutput:
        return super().training_step(drop_modalities(batch, self.options.moddrop_rate, self.step_generator(host=True)))
