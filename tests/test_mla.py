import pytest
import torch
from safetensors.torch import load_file

from altmodal.data.batch import Batch
from altmodal.data.registry import DataConfig, load_splits
from altmodal.encoders import EncoderConfig
from altmodal.experiment import resolve, train_run
from altmodal.runs import Run
from altmodal.strategies import build_strategy
from altmodal.strategies.base import TrainConfig
from altmodal.trainer import Trainer
from tests.conftest import TINY, tiny_config, train_interrupted

ENC = EncoderConfig(dim=8, hidden=(16,))


def make_mla(splits, **options):
    config = resolve({"strategy": "mla", **options})
    strategy = build_strategy("mla", splits, ENC, config.options)
    Trainer.attach(strategy, TrainConfig(lr=0.1, batch_size=16))
    return strategy


def first_batch(splits, n=16):
    return splits.train.gather(torch.arange(n).numpy())


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def unchanged(before, module):
    return all(torch.equal(before[k], v) for k, v in module.state_dict().items())


def test_a_step_updates_only_its_encoder_and_the_head_with_no_optimizer_leak(tiny_splits):
    mla = make_mla(tiny_splits, cycle="iteration")
    batch = first_batch(tiny_splits)
    before = {m: snapshot(mla.encoders[m]) for m in mla.modalities}
    head_before = snapshot(mla.heads)
    mla.trainer.batch_index = 0  # iteration 0 steps m0 only
    out = mla.training_step(batch)
    assert list(out.unimodal) == ["m0"]
    assert not unchanged(before["m0"], mla.encoders["m0"]) and not unchanged(head_before, mla.heads)
    assert unchanged(before["m1"], mla.encoders["m1"])
    state = mla.optimizer.state
    assert all(p not in state for p in mla.encoders["m1"].parameters())
    assert all("momentum_buffer" in state[p] for p in mla.encoders["m0"].parameters())
    mla.trainer.batch_index = 1  # iteration 1 steps m1: m0 must not move (no momentum, no decay)
    m0_before = snapshot(mla.encoders["m0"])
    mla.training_step(batch)
    assert unchanged(m0_before, mla.encoders["m0"])


def test_leak_option_reproduces_the_reference_optimizer(tiny_splits):
    mla = make_mla(tiny_splits, leak_optimizer=True)
    batch = first_batch(tiny_splits)
    mla.training_step(batch)  # m0 then m1: m0's params see zero grads during m1's step
    m0_params = list(mla.encoders["m0"].parameters())
    m0_before = [p.detach().clone() for p in m0_params]
    momentum = [mla.optimizer.state[p]["momentum_buffer"].clone() for p in m0_params]
    edit, after = mla._hgm("m1", mla.head("m1"), torch.zeros(1, 8), torch.tensor(1.0), ["m0"])
    mla.optimize(torch.zeros((), requires_grad=True) * 0, edit=edit, after=after)
    moved = any(not torch.equal(a, p) for a, p in zip(m0_before, m0_params))
    decayed = any(not torch.equal(a, mla.optimizer.state[p]["momentum_buffer"]) for a, p in zip(momentum, m0_params))
    assert moved and decayed


def test_samples_without_a_modality_take_no_part_in_its_step(tiny_splits):
    mla = make_mla(tiny_splits, projection=False)
    batch = first_batch(tiny_splits)
    present = dict(batch.present)
    present["m1"] = torch.zeros_like(present["m1"])
    present["m1"][:4] = True
    masked = batch.with_present(present)
    out = mla.training_step(masked)
    assert out.unimodal["m1"][0].shape[0] == 4 and out.unimodal["m0"][0].shape[0] == 16
    # Without any m1 sample, the m1 step is skipped entirely.
    mla2 = make_mla(tiny_splits)
    none = batch.with_present({"m0": batch.present["m0"], "m1": torch.zeros_like(batch.present["m1"])})
    before = snapshot(mla2.encoders["m1"])
    out2 = mla2.training_step(none)
    assert "m1" not in out2.unimodal and unchanged(before, mla2.encoders["m1"])


def test_step_orders(tiny_splits):
    assert make_mla(tiny_splits).step_order() == ["m0", "m1"]
    assert make_mla(tiny_splits, order="reversed").step_order() == ["m1", "m0"]
    mla = make_mla(tiny_splits, order="random")
    orders = set()
    for b in range(20):
        mla.trainer.batch_index = b
        orders.add(tuple(mla.step_order()))
    assert orders == {("m0", "m1"), ("m1", "m0")}
    it = make_mla(tiny_splits, cycle="iteration")
    seen = []
    for b in range(4):
        it.trainer.batch_index = b
        seen += it.step_order()
    assert seen == ["m0", "m1", "m0", "m1"]


def test_three_modalities_with_different_widths_share_one_head():
    splits = load_splits(
        DataConfig(dataset="synthetic", dataset_options=(*TINY, "modalities=3", "widths=4,9,6")), seed=0
    )
    mla = make_mla(splits)
    assert list(mla.heads) == ["shared"] and mla.heads["shared"].in_features == 8
    out = mla.training_step(first_batch(splits))
    assert set(out.unimodal) == {"m0", "m1", "m2"}
    assert mla.fusion_weights == (0.35, 0.25, 0.40)


def test_hgm_runs_during_training_and_is_off_when_asked(tiny_splits):
    mla = make_mla(tiny_splits)
    mla.training_step(first_batch(tiny_splits))
    assert not torch.allclose(mla.projector.P, torch.eye(8)) and int(mla.state_dict()["projector.steps"]) == 2
    assert make_mla(tiny_splits, projection=False).projector is None
    assert make_mla(tiny_splits, heads="separate").projector is None


def test_presets_set_options_and_explicit_settings_win():
    ref = resolve({"strategy": "mla", "preset": "reference-code"}).options
    assert ref["h_source"] == "batch" and ref["alpha_schedule"] == "reference" and ref["normalize_p"]
    assert ref["test_fusion"] == "batch-entropy" and ref["skip_first"] and ref["projection"]
    released = resolve({"strategy": "mla", "preset": "reference-code-as-released"}).options
    assert released["projection"] is False and released["h_source"] == "batch"
    mixed = resolve({"strategy": "mla", "preset": "reference-code", "test_fusion": "entropy"}).options
    assert mixed["test_fusion"] == "entropy" and mixed["h_source"] == "batch"
    assert resolve({"strategy": "mla"}).options["h_source"] == "running"
    for preset in ("paper", "reference-code", "reference-code-as-released"):  # the paper's and code's HGM
        options = resolve({"strategy": "mla", "preset": preset}).options
        assert (options["projection_target"], options["forget"]) == ("gradient", "never"), preset
    assert resolve({"strategy": "mla"}).options["projection_target"] == "update"


def test_separate_heads_and_fixed_fusion(tiny_splits):
    mla = make_mla(tiny_splits, heads="separate", test_fusion="fixed", fusion_weights=(0.7, 0.3))
    assert set(mla.heads) == {"m0", "m1"}
    batch = first_batch(tiny_splits)
    features = mla.encode(batch)
    logits = mla.unimodal_logits(features)
    assert torch.allclose(mla.fuse(features, batch.present), 0.7 * logits["m0"] + 0.3 * logits["m1"], atol=1e-6)


def test_mla_prediction_of_a_sample_does_not_depend_on_its_batch(tiny_splits):
    mla = make_mla(tiny_splits)
    mla.training_step(first_batch(tiny_splits))
    mla.eval()
    big = first_batch(tiny_splits, 16)
    small = Batch(
        {m: x[:5] for m, x in big.inputs.items()},
        {m: p[:5] for m, p in big.present.items()},
        big.label[:5],
        big.index[:5],
    )
    with torch.no_grad():
        a = mla.fuse(mla.encode(big), big.present)[:5]
        b = mla.fuse(mla.encode(small), small.present)
    assert torch.allclose(a, b, atol=1e-6)


def test_projector_state_is_checkpointed_and_resume_is_exact(tmp_path, monkeypatch):
    config = tiny_config(strategy="mla", epochs=3)
    whole = train_run(config, tmp_path / "whole")
    original = Run.on_epoch_end
    captured = {}

    def stop_after_first(self, strategy, state):
        original(self, strategy, state)
        captured["P"] = state["training"]["model"]["projector.P"].clone()
        raise KeyboardInterrupt

    monkeypatch.setattr(Run, "on_epoch_end", stop_after_first)
    with pytest.raises(KeyboardInterrupt):
        train_run(config, tmp_path / "cut")
    assert not torch.allclose(captured["P"], torch.eye(8))
    monkeypatch.setattr(Run, "on_epoch_end", original)
    resumed = train_run(config, tmp_path / "cut")
    assert resumed["test"] == whole["test"]
    a = load_file(tmp_path / "whole" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "model.safetensors")
    assert torch.equal(a["projector.P"], b["projector.P"]) and torch.equal(
        a["heads.shared.weight"], b["heads.shared.weight"]
    )


def test_mla_beats_lazy_joint_on_the_weak_modality(tmp_path):
    settings = {"epochs": 15, "dataset_options": (*TINY, "strengths=1.5,0.5")}
    joint = train_run(tiny_config(strategy="joint", **settings), tmp_path / "joint")
    mla = train_run(tiny_config(strategy="mla", **settings), tmp_path / "mla")
    assert mla["test"]["unimodal"]["m1"]["accuracy"] > joint["test"]["unimodal"]["m1"]["accuracy"]


def test_random_order_with_one_modality_per_iteration_visits_each_modality_once_per_cycle():
    splits = load_splits(DataConfig(dataset="synthetic", dataset_options=(*TINY, "modalities=3")), seed=0)
    mla = make_mla(splits, cycle="iteration", order="random")
    mla.trainer.batches_per_epoch = 4  # not a multiple of 3: cycles run across epochs
    steps = []
    for epoch in range(3):
        for b in range(4):
            mla.trainer.epoch, mla.trainer.batch_index = epoch, b
            steps += mla.step_order()
    cycles = [steps[i : i + 3] for i in range(0, 12, 3)]
    assert all(sorted(c) == ["m0", "m1", "m2"] for c in cycles)
    assert len({tuple(c) for c in cycles}) > 1


def test_ogd_step_of_one_modality_keeps_the_others_stored_logits_exactly(tiny_splits):
    config = resolve({"strategy": "mla", "projection_method": "ogd", "ogd_memory": 8, "cycle": "iteration"})
    mla = build_strategy("mla", tiny_splits, ENC, config.options)
    Trainer.attach(mla, TrainConfig(lr=0.1, batch_size=16, momentum=0.0, weight_decay=0.0))
    batch = first_batch(tiny_splits)
    mla.trainer.batch_index = 1  # iteration 1 steps m1, whose features are stored
    mla.training_step(batch)
    mla.on_epoch_start(1)  # the refresh: m0's steps are now projected against m1's memory
    stored = mla.projector.stored_features("m1")[:, :-1]
    assert stored.shape == (8, 8)  # the last 8 of the step's 16 (memory 8 < d + 1 = 9)
    before = mla.head("shared")(stored).detach()
    mla.trainer.batch_index = 0
    mla.training_step(first_batch(tiny_splits, 32))
    assert torch.allclose(mla.head("shared")(stored), before, atol=1e-5)
    assert int(mla.projector.state_dict()["stored"][0]) == 8


def test_pca_ogd_state_is_checkpointed_and_resume_is_exact(tmp_path, monkeypatch):
    config = tiny_config(strategy="mla", projection_method="pca-ogd", pca_pool=100, epochs=3)
    whole = train_run(config, tmp_path / "whole")
    resumed = train_interrupted(config, tmp_path / "cut", monkeypatch)["metrics"]
    assert resumed["test"] == whole["test"]
    a = load_file(tmp_path / "whole" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a) and (a["projector.stored"] > 0).all()


def test_ogd_basis_must_leave_the_head_room(tiny_splits):
    config = resolve({"strategy": "mla", "projection_method": "ogd", "ogd_memory": 9})
    with pytest.raises(ValueError, match=r"--ogd-memory 9 leaves no room: 1 other modalities x 9 directions"):
        build_strategy("mla", tiny_splits, ENC, config.options)


def twin_steps(target, momentum=0.9, weight_decay=1e-4):
    """Two MLAs that take the same six steps (one modality each, momentum built up); on the seventh
    (an m0 step) the first projects as ``target`` says and the second does not project at all.
    Returns the head's change in each and the other modality's running mean feature, and P."""
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        config = resolve({"strategy": "mla", "cycle": "iteration", "projection_target": target})
        tiny = load_splits(DataConfig(dataset="synthetic", dataset_options=TINY), 0)
        mla = build_strategy("mla", tiny, ENC, config.options)
        Trainer.attach(mla, TrainConfig(lr=0.1, batch_size=16, momentum=momentum, weight_decay=weight_decay))
        models.append(mla)
    raw = models[1]
    changes = []
    for mla in models:
        for step in range(7):
            mla.trainer.batch_index = step
            if step == 6 and mla is raw:  # the same step with no projection
                if target == "update":
                    mla.projector.project_update = lambda *args: None
                else:
                    mla.projector.target = "update"  # P is updated, the gradient left alone
            before = mla.head("m0").weight.detach().clone()
            mla.training_step(first_batch(tiny, 32))
        changes.append(mla.head("m0").weight.detach() - before)
    first = models[0].projector
    return changes[0], changes[1], first.means[1], first.P


@pytest.mark.parametrize("target", ["update", "gradient"])
def test_the_projected_update_keeps_the_guarantee_under_momentum_and_weight_decay(target):
    moved, raw, h, P = twin_steps(target)
    allowed = float((raw @ P.T @ h).norm())  # the unprojected update, projected: what HGM allows
    change = float((moved @ h).norm())
    assert allowed > 0
    if target == "update":  # the default: the change on the other modality's feature is what P allows
        assert change <= (1 + 1e-3) * allowed and change >= (1 - 1e-3) * allowed
    else:  # the paper's projected gradient: momentum carries unprojected updates past P
        assert change > 1.1 * allowed


def test_with_plain_sgd_the_update_target_is_the_papers_step():
    moved_update, _, _, _ = twin_steps("update", momentum=0.0, weight_decay=0.0)
    moved_gradient, _, _, _ = twin_steps("gradient", momentum=0.0, weight_decay=0.0)
    assert torch.allclose(moved_update, moved_gradient, atol=1e-7)


def test_forgetting_restarts_or_relaxes_P(tiny_splits):
    mla = make_mla(tiny_splits, forget="epoch")
    mla.training_step(first_batch(tiny_splits))
    assert not torch.allclose(mla.projector.P, torch.eye(8))
    mla.on_epoch_start(1)
    assert torch.equal(mla.projector.P, torch.eye(8))
    decaying = make_mla(tiny_splits, forget="decay", forget_half_life=2.0)
    decaying.trainer.batches_per_epoch = 5  # 2 epochs x 5 batches x 2 modalities: 20 updates halve the protection
    assert decaying._decay_keep() ** 20 == pytest.approx(0.5)
    assert make_mla(tiny_splits).options.forget == "never"


def test_projection_statistics_are_recorded_per_epoch(tiny_splits):
    mla = make_mla(tiny_splits, projection_stats=True)
    out = mla.training_step(first_batch(tiny_splits))
    assert set(out.extras) == {"hgm_survival", "hgm_log10_guarantee", "hgm_log10_leak"}
    assert 0 < float(out.extras["hgm_survival"]) <= 1
    assert abs(float(out.extras["hgm_log10_guarantee"])) < 1e-3  # 10^0: the change is what P allows


class NormedEncoder(torch.nn.Module):
    """An encoder with batch normalisation, whose running statistics show every train-mode pass."""

    def __init__(self, width):
        super().__init__()
        self.layer, self.norm, self.out_dim = torch.nn.Linear(width, 8), torch.nn.BatchNorm1d(8), 8

    def forward(self, x):
        return torch.relu(self.norm(self.layer(x)))


def test_one_modality_per_iteration_leaves_the_other_encoders_normalisation_alone(tiny_splits):
    config = resolve({"strategy": "mla", "cycle": "iteration"})
    custom = {m: NormedEncoder(tiny_splits.train.input_shape(m)[0]) for m in tiny_splits.modalities}
    mla = build_strategy("mla", tiny_splits, ENC, config.options, custom)
    Trainer.attach(mla, TrainConfig(lr=0.1, batch_size=16))
    mla.train()
    mla.trainer.batch_index = 0  # an m0 step; the fusion head also reads m1's features
    mla.training_step(first_batch(tiny_splits))
    assert int(mla.encoders["m0"].norm.num_batches_tracked) == 1  # its own step, once
    assert int(mla.encoders["m1"].norm.num_batches_tracked) == 0
    assert mla.encoders["m1"].training  # back in training mode
