"""MMPareto, DGL, G-Blending and InfoReg: their formulas on hand-computed tensors, their gradient
routing on a tiny model, and their per-run state across an interruption."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import altmodal.trainer as loop
from altmodal.encoders import EncoderConfig
from altmodal.experiment import resolve, train_run
from altmodal.runs import Run, read_csv
from altmodal.strategies import build_strategy
from altmodal.strategies.base import TrainConfig
from altmodal.strategies.gblend import blend_weights, carve_holdout, overfit_error, super_epochs
from altmodal.strategies.inforeg import penalty_coefficients, score_gaps, trace_growth
from altmodal.strategies.mmpareto import mgda_weights, rescale
from altmodal.strategies.parts import true_class_scores, unimodal_losses
from altmodal.trainer import Trainer
from tests.conftest import tiny_config, train_interrupted

PEERS = ["mmpareto", "dgl", "gblend", "inforeg", "aug", "reconboost", "midas"]


def build(name, splits, **options):
    options = resolve({"strategy": name, **options}).options
    strategy = build_strategy(name, splits, EncoderConfig(dim=8, hidden=(16,)), options)
    Trainer.attach(strategy, TrainConfig(batch_size=32))
    return strategy


def frozen_step(strategy, batch):
    """Run one training step but keep the parameters: the gradients it would apply stay in .grad
    (the loop clears them after each step; they are put back)."""
    applied = {}
    original = loop.step
    loop.step = lambda optimizer, params, scaler=None: applied.update({p: p.grad for p in params})
    try:
        out = strategy.training_step(batch)
    finally:
        loop.step = original
    for p, grad in applied.items():
        p.grad = grad
    return out


def encoder_params(strategy, m):
    return list(strategy.encoders[m].parameters())


# ----- MMPareto -------------------------------------------------------------------------------


def test_mgda_weights_for_a_known_conflicting_pair():
    g_m, g_u = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    # alpha_m = <g_u - g_m, g_u> / |g_m - g_u|^2 = <(-2, 1), (-1, 1)> / |(2, -1)|^2 = 3 / 5
    assert mgda_weights(g_m, g_u) == pytest.approx((0.6, 0.4))
    assert mgda_weights(g_m, torch.tensor([1.0, 1.0])) == (0.5, 0.5)  # no conflict
    assert mgda_weights(g_m, g_m) == (0.5, 0.5)  # equal: the min-norm quotient 0/0 is not taken
    assert mgda_weights(g_m, torch.tensor([-1e-4, 0.0]), clip=0.001)[0] == pytest.approx(0.001)
    # h' = 1.2 g_m + 0.8 g_u = (0.4, 0.8); h = 1.5 |g_m + g_u| h' / |h'| = 1.5 * 1 * (0.4, 0.8) / sqrt(0.8)
    h = rescale(g_m, g_u, (0.6, 0.4), 1.5, never_shrink=False)
    assert torch.allclose(h, torch.tensor([0.4, 0.8]) * 1.5 / math.sqrt(0.8))
    assert float(h @ g_m) > 0 and float(h @ g_u) > 0  # a common descent direction


def test_code_rescale_never_shrinks():
    g_m, g_u = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    # h' = (1.8, 0.2): |g_m + g_u| / |h'| = sqrt(2) / sqrt(3.28) < 1
    ratio = math.sqrt(2) / math.sqrt(3.28)
    assert torch.allclose(rescale(g_m, g_u, (0.9, 0.1), 1.0, never_shrink=False), torch.tensor([1.8, 0.2]) * ratio)
    assert torch.allclose(rescale(g_m, g_u, (0.9, 0.1), 2.0, never_shrink=True), torch.tensor([3.6, 0.4]))
    assert torch.equal(rescale(g_m, -g_m, (0.5, 0.5), 1.5, never_shrink=False), torch.zeros(2))


@pytest.mark.parametrize("mode", ["encoder", "tensor"])
def test_mmpareto_gives_each_encoder_the_rescaled_min_norm_direction(mode, tiny_splits):
    torch.manual_seed(0)
    pareto = build("mmpareto", tiny_splits, pareto_rescale=mode)
    batch = tiny_splits.train.gather(np.arange(32))
    features = pareto.encode(batch)
    fused = pareto.cross_entropy(pareto.head(features), batch.label)
    unimodal = sum(unimodal_losses(pareto, pareto.aux(features), batch).values())
    expected, heads = {}, [*pareto.head.parameters(), *pareto.aux.parameters()]
    for m in pareto.modalities:
        params = encoder_params(pareto, m)
        g_m = torch.cat([g.reshape(-1) for g in torch.autograd.grad(fused, params, retain_graph=True)])
        g_u = torch.cat([g.reshape(-1) for g in torch.autograd.grad(unimodal, params, retain_graph=True)])
        alphas, sizes = mgda_weights(g_m, g_u), [p.numel() for p in params]
        if mode == "encoder":
            expected[m] = rescale(g_m, g_u, alphas, 1.5, never_shrink=False)
        else:  # per tensor, never shrinking
            pieces = zip(g_m.split(sizes), g_u.split(sizes))
            expected[m] = torch.cat([rescale(a, b, alphas, 1.5, never_shrink=True) for a, b in pieces])
    head_grads = torch.autograd.grad(fused + unimodal, heads)
    out = frozen_step(pareto, batch)
    for m in pareto.modalities:
        got = torch.cat([p.grad.reshape(-1) for p in encoder_params(pareto, m)])
        assert torch.allclose(got, expected[m], atol=1e-6)
    assert all(torch.allclose(p.grad, g, atol=1e-7) for p, g in zip(heads, head_grads))  # plain, no gamma
    assert out.extras == {"pareto_conflict_m0": 1.0, "pareto_conflict_m1": 1.0}  # the min-norm case is exercised


def test_mmpareto_leaves_an_absent_modality_alone(tiny_splits):
    pareto = build("mmpareto", tiny_splits)
    pareto.absent = "zero-features"  # with zero inputs (the default) the fused loss reaches its encoder
    batch = tiny_splits.train.gather(np.arange(16))
    batch = batch.with_present({"m0": batch.present["m0"], "m1": torch.zeros(16, dtype=torch.bool)})
    out = frozen_step(pareto, batch)
    assert all(p.grad is None for p in encoder_params(pareto, "m1"))
    assert "pareto_conflict_m1" not in out.extras and math.isfinite(float(out.loss))


# ----- DGL --------------------------------------------------------------------------------------


def test_dgl_routes_the_fused_loss_to_the_head_and_unimodal_losses_to_the_encoders(tiny_splits):
    torch.manual_seed(0)
    dgl = build("dgl", tiny_splits)
    batch = tiny_splits.train.gather(np.arange(32))
    present = dict(batch.present)
    present["m1"] = torch.arange(32) % 3 > 0  # some samples lack m1
    batch = batch.with_present(present)
    loss, logits = dgl.losses(batch)
    head, encoders = list(dgl.head.parameters()), list(dgl.encoders.parameters())
    got = torch.autograd.grad(loss, head + encoders)
    features = dgl.encode(batch)
    fused_only = dgl.cross_entropy(dgl.head({m: f.detach() for m, f in features.items()}), batch.label)
    alone = dgl.unimodal_logits(features)  # the head with the other modality zeroed
    unimodal_only = 4.0 * sum(unimodal_losses(dgl, alone, batch).values())
    want_head = torch.autograd.grad(fused_only, head)
    want_encoders = torch.autograd.grad(unimodal_only, encoders)
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(got, [*want_head, *want_encoders]))
    # u_m = W_m z_m + b with the FULL bias, on the samples that have m.
    weight, bias = dgl.head.fc.weight, dgl.head.fc.bias
    assert torch.allclose(alone["m0"], features["m0"] @ weight[:, :8].T + bias, atol=1e-6)
    assert torch.allclose(logits["m1"], alone["m1"], atol=1e-6)


# ----- G-Blending ------------------------------------------------------------------------------


def test_blend_weights_from_known_loss_curves():
    train = torch.tensor([[1.0, 1.0, 1.0], [0.5, 0.8, 0.4]])
    val = torch.tensor([[1.2, 1.1, 1.0], [0.9, 1.15, 0.6]])
    # dG = (0.3, -0.05, 0.4); dO = (0.4 - 0.2, 0.35 - 0.1, 0.2 - 0.0) = (0.2, 0.25, 0.2)
    # raw = (0.3 / 0.04, 0, 0.4 / 0.04) = (7.5, 0, 10)
    assert torch.allclose(blend_weights(train, val, 1e-3), torch.tensor([7.5, 0.0, 10.0]) / 17.5)
    rising = torch.tensor([[1.0, 1.0], [1.2, 1.3]])
    assert torch.allclose(blend_weights(rising, rising, 1e-3), torch.tensor([0.5, 0.5]))  # no gain anywhere
    # A head that does not overfit (dO <= 0) is floored at eps: (0.1 / 0.01^2) vs (0.1 / 0.1^2).
    w = blend_weights(torch.tensor([[1.0, 1.0], [0.9, 0.8]]), torch.tensor([[1.0, 1.0], [0.9, 0.9]]), 0.01)
    assert torch.allclose(w, torch.tensor([1000.0, 10.0]) / 1010.0)


def test_a_head_that_does_not_overfit_does_not_take_all_the_weight():
    """The AV-digits collapse: head 0 gains 0.1 without overfitting more (dO = -0.01), head 1 gains
    0.5 and overfits by 0.1. An absolute floor of 1e-3 gives head 0 0.1 / 1e-6 against 0.5 / 0.01:
    nearly all the weight. Floored at the standard error of dO, here 0.1 for both, it gets 10 against 50."""
    train = torch.tensor([[1.0, 1.0], [0.91, 0.4]])
    val = torch.tensor([[1.0, 1.0], [0.9, 0.5]])  # dG = (0.1, 0.5); dO = (-0.01, 0.1)
    assert float(blend_weights(train, val, 1e-3)[0]) > 0.999
    assert torch.allclose(blend_weights(train, val, torch.tensor([0.1, 0.1])), torch.tensor([1.0, 5.0]) / 6.0)
    # A per-head floor only binds below it: head 1's dO = 0.1 stands against a floor of 0.05.
    assert torch.allclose(blend_weights(train, val, torch.tensor([0.1, 0.05])), torch.tensor([1.0, 5.0]) / 6.0)


def test_overfit_error_by_hand():
    # T': start 1, end (0.5, 0.7, 0.5, 0.7): changes (-0.5, -0.3, ...), variance 0.04 / 3, over n = 4
    # V:  start 1, end (1.2, 0.8, 1.2, 0.8): changes (0.2, -0.2, ...), variance 0.16 / 3, over n = 4
    train = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.5, 0.7, 0.5, 0.7]])
    val = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.2, 0.8, 1.2, 0.8]])
    expected = math.sqrt(0.04 / 12 + 0.16 / 12)
    # A second head measured on one holdout sample: its variance term is 0; a shift common to all
    # samples has no spread, so no error.
    one = torch.tensor([[1.0], [0.5]])
    shifted = torch.tensor([[1.0, 2.0, 3.0], [0.5, 1.5, 2.5]])
    error = overfit_error([train, shifted], [val, one])
    assert torch.allclose(error, torch.tensor([expected, 0.0]))


def test_super_epochs_online_and_offline():
    assert super_epochs(30, 10, 5, online=True) == {0: 10, 10: 5, 15: 5, 20: 5, 25: 5}
    assert super_epochs(12, 10, 5, online=True) == {0: 10, 10: 2}
    assert super_epochs(4, 10, 5, online=True) == {0: 4}
    assert super_epochs(12, 10, 5, online=False) == {0: 12}


def test_the_holdout_is_carved_from_the_training_split(tiny_splits):
    train = tiny_splits.train
    holdout = carve_holdout(train, 0.1, seed=0, transforms={})
    rows, held, subset = set(holdout.train.rows), set(holdout.val.rows), set(holdout.train_subset.rows)
    assert rows | held == set(train.rows) and not rows & held
    assert subset <= rows and len(subset) == len(held) == round(0.1 * len(train))
    assert not held & (set(tiny_splits.val.rows) | set(tiny_splits.test.rows))
    tiny = carve_holdout(train, 0.0001, seed=0, transforms={})
    assert len(tiny.val) == 3  # one sample of each class at least


def test_a_one_hot_blend_trains_only_its_head(tiny_splits):
    """What an estimation copy relies on: with weight only on m0's head, only m0's encoder and head learn."""
    blend = build("gblend", tiny_splits)
    blend.blend.copy_(torch.tensor([1.0, 0.0, 0.0]))
    before = {k: v.clone() for k, v in blend.state_dict().items()}
    blend.trainer.train_epoch(blend, tiny_splits.train, 0)
    changed = [k for k, v in blend.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("encoders.m0.") for k in changed) and any(k.startswith("aux.fc.m0.") for k in changed)
    assert all(k.startswith(("encoders.m0.", "aux.fc.m0.")) for k in changed), changed


def test_estimation_copies_train_at_the_learning_rate_of_the_main_run(tiny_splits, monkeypatch):
    from altmodal.optim import lr_factor
    from altmodal.strategies.gblend import GBlend

    blend = build("gblend", tiny_splits)
    config = TrainConfig(lr=0.1, batch_size=32, warmup_epochs=4, epochs=10)
    Trainer.attach(blend, config)
    blend.trainer.epoch = 2
    seen = []
    original = Trainer.train_epoch

    def record(self, strategy, dataset, epoch):
        assert isinstance(strategy, GBlend) and strategy is not blend
        seen.append((epoch, self.optimizer.param_groups[0]["lr"]))
        return original(self, strategy, dataset, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", record)
    blend.estimate(carve_holdout(tiny_splits.train, 0.2, 0, {}), epochs=3)
    assert len(seen) == 3 * 3  # three heads, three epochs each
    assert all(lr == pytest.approx(0.1 * lr_factor(epoch, config)) for epoch, lr in seen)
    assert {epoch for epoch, _ in seen} == {2, 3, 4}


# ----- InfoReg --------------------------------------------------------------------------------


def test_inforeg_gaps_coefficients_and_window_by_hand():
    gaps = score_gaps(torch.tensor([0.9, 0.5, 0.6]))
    # m0 is above both: mean(0.4, 0.3); m1 is the weakest: 0; m2 is above m1 only: 0.1
    assert torch.allclose(gaps, torch.tensor([0.35, 0.0, 0.1]))
    assert torch.allclose(score_gaps(torch.tensor([0.9, float("nan"), 0.6])), torch.tensor([0.3, 0.0, 0.0]))
    # exp(0.9 tanh(Delta)) for the modalities ahead; the weakest (Delta = 0) is not pulled
    pulls = torch.tensor([math.exp(0.9 * math.tanh(0.35)), 0.0, math.exp(0.9 * math.tanh(0.1))])
    assert torch.allclose(penalty_coefficients(gaps, 0.9), pulls)
    # rho = (Tr^{t-1} - Tr^{t-2}) / Tr^{t-1} for three modalities, epochs t-2 (row 0) and t-1 (row 1)
    growth = trace_growth(torch.tensor([[1.0, 3.0, 1.0], [2.0, 2.0, 0.0]]))
    assert torch.allclose(growth, torch.tensor([0.5, -0.5, 0.0]))
    # Moving averages over w = 2 epochs: (mean(1, 3) - mean(0, 1)) / mean(1, 3) = (2 - 0.5) / 2
    assert torch.allclose(trace_growth(torch.tensor([[0.0], [1.0], [3.0]])), torch.tensor([0.75]))


def test_inforeg_keeps_the_last_epoch_traces_it_logs(tiny_splits):
    reg = build("inforeg", tiny_splits, inforeg_average=2)
    rows = [reg.trainer.train_epoch(reg, tiny_splits.train, epoch) for epoch in range(4)]
    logged = torch.tensor([[row[f"inforeg_trace_{m}"] for m in reg.modalities] for row in rows], dtype=torch.float64)
    assert torch.allclose(reg.traces, logged[1:], rtol=1e-6)  # epochs 1, 2, 3: w + 1 = 3 rows
    # Epoch 3's window compares the traces of epochs 1-2 with those of epochs 0-1.
    assert rows[3]["inforeg_rho_m1"] == pytest.approx(float(trace_growth(logged[:3])[1]), rel=1e-5)


def test_inforeg_pulls_only_the_better_modality_towards_its_snapshot(tiny_splits):
    torch.manual_seed(0)
    reg = build("inforeg", tiny_splits)
    batch = tiny_splits.train.gather(np.arange(32))
    reg.trainer.epoch = 2
    reg.rho = torch.tensor([1.0, 1.0], dtype=torch.float64)  # both windows open
    reg.snapshot.zero_()
    features = reg.encode(batch)
    logits = reg.head.unimodal(features)
    scores = true_class_scores(reg, logits, batch)
    better = reg.modalities[int(scores.argmax())]
    worse = reg.modalities[int(scores.argmin())]
    loss = reg.cross_entropy(reg.head(features), batch.label)
    params = list(reg.encoders.parameters())
    plain = dict(zip(params, torch.autograd.grad(loss, params)))
    coefficient = math.exp(0.9 * math.tanh(float(scores.max() - scores.min())))
    out = frozen_step(reg, batch)
    for p in encoder_params(reg, better):
        assert torch.allclose(p.grad, plain[p] + coefficient * p.detach(), atol=1e-6)
    for p in encoder_params(reg, worse):
        assert torch.allclose(p.grad, plain[p], atol=1e-7)
    assert out.extras[f"inforeg_penalised_{better}"] == 1.0 and out.extras[f"inforeg_penalised_{worse}"] == 0.0
    trace = sum(float(g.square().sum()) for p, g in plain.items() if any(p is q for q in encoder_params(reg, worse)))
    assert out.extras[f"inforeg_trace_{worse}"] == pytest.approx(trace, rel=1e-5)


def test_inforeg_regulates_from_epoch_0_with_the_codes_moving_averages_and_from_2_as_the_paper(tiny_splits):
    for average, first in ((10, 0), (1, 2)):
        reg = build("inforeg", tiny_splits, inforeg_average=average)
        rows = [reg.trainer.train_epoch(reg, tiny_splits.train, epoch) for epoch in range(3)]
        penalised = [max(row.get(f"inforeg_penalised_{m}", 0.0) for m in reg.modalities) for row in rows]
        assert all(p == 0 for p in penalised[:first]) and penalised[first] > 0, (average, penalised)
        if average == 10:  # the window opens at once: rho = 1 in epoch 0, as the code's k = 1
            assert rows[0]["inforeg_rho_m0"] == 1.0


def test_inforeg_star_adds_unimodal_losses(tiny_splits):
    for kind, head_count in (("slice", 0), ("heads", 2)):
        reg = build("inforeg", tiny_splits, inforeg_unimodal_loss=kind)
        assert (0 if reg.aux is None else len(reg.aux.fc)) == head_count
        batch = tiny_splits.train.gather(np.arange(32))
        features = reg.encode(batch)
        fused = reg.cross_entropy(reg.head(features), batch.label)
        expected = fused + sum(F.cross_entropy(v, batch.label) for v in reg.unimodal_logits(features).values())
        assert float(frozen_step(reg, batch).loss) == pytest.approx(float(expected.detach()), rel=1e-6)


# ----- every peer: missing modalities, history, resume ------------------------------------------


@pytest.mark.parametrize("name, settings", [(name, {}) for name in PEERS] + [("gblend", {"gblend_mode": "offline"})])
def test_peers_train_with_missing_modalities(name, settings, tmp_path):
    config = tiny_config(strategy=name, epochs=1, train_missing_rate=0.4, test_missing_rate=0.4, **settings)
    metrics = train_run(config, tmp_path)
    assert 0 <= metrics["test"]["fused"]["accuracy"] <= 1
    assert set(metrics["test"]["unimodal"]) == {"m0", "m1"}
    json.dumps(metrics)


@pytest.mark.parametrize(
    "name, settings, cut",
    [
        ("gblend", {"gblend_first": 1, "gblend_super_epoch": 2}, 1),
        ("inforeg", {"inforeg_k": -1.0}, 2),
        ("aug", {"aug_every": 1, "train_missing_rate": 0.3}, 1),
        ("reconboost", {"train_missing_rate": 0.3}, 2),
        ("midas", {"midas_warmup": 1, "train_missing_rate": 0.3}, 1),
    ],
)
def test_interrupted_peer_resumes_to_the_same_model(name, settings, cut, tmp_path, monkeypatch):
    config = tiny_config(strategy=name, epochs=3 if name == "gblend" else 4, **settings)
    whole = train_run(config, tmp_path / "whole")
    resumed = train_interrupted(config, tmp_path / "cut", monkeypatch, after_epoch=cut)["metrics"]
    assert resumed["test"] == whole["test"]
    a = Run(tmp_path / "whole").load_tensors("model.safetensors")
    b = Run(tmp_path / "cut").load_tensors("model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [read_csv(Run(tmp_path / run).file("history.csv")) for run in ("whole", "cut")]
    assert [{k: v for k, v in row.items() if k != "seconds"} for row in rows[0]] == [
        {k: v for k, v in row.items() if k != "seconds"} for row in rows[1]
    ]
    if name == "gblend":  # estimated at epochs 0 and 1; epoch 2 goes on with the checkpointed weights
        w = [[row[f"gblend_w_{k}"] for k in ("m0", "m1", "fused")] for row in rows[1]]
        assert all(sum(ws) == pytest.approx(1.0) for ws in w) and w[0] != w[1] and w[1] == w[2]
