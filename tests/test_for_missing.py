"""SMIL's protocol and the strategies built for missing modalities (ModDrop, ShaSpec, SMIL):
their formulas on hand-computed tensors and their mechanisms on a tiny model."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from altmodal.clustering import centres
from altmodal.data.registry import DataConfig, load_splits
from altmodal.data.splits import incomplete_mask
from altmodal.encoders import EncoderConfig
from altmodal.experiment import resolve, train_run
from altmodal.model import run_encoder
from altmodal.strategies import build_strategy
from altmodal.strategies.base import TrainConfig
from altmodal.strategies.parts import drop_masks, mean_present
from altmodal.trainer import Trainer
from tests.conftest import TINY, tiny_config
from tests.test_peers import frozen_step


def build(name, splits, **options):
    options = resolve({"strategy": name, **options}).options
    strategy = build_strategy(name, splits, EncoderConfig(dim=8, hidden=(16,)), options)
    Trainer.attach(strategy, TrainConfig(batch_size=32, lr=0.1))
    return strategy


# ----- SMIL's protocol --------------------------------------------------------------------------


def test_a_share_of_each_class_keeps_every_modality_and_the_rest_lose_one():
    labels = np.repeat([0, 1], 50)
    present = {"a": np.ones(100, bool), "v": np.ones(100, bool)}
    rows = np.arange(80)  # the last 20 (say, test) are left alone
    out = incomplete_mask(present, rows, labels, 0.2, "a", seed=3)
    assert out["v"].all() and out["a"][80:].all()
    assert out["a"][:50].sum() == 10 and out["a"][50:80].sum() == 6  # 20% of 50 and of 30 kept
    assert not np.array_equal(out["a"], incomplete_mask(present, rows, labels, 0.2, "a", seed=4)["a"])
    with pytest.raises(ValueError, match="'x' is not a modality here"):
        incomplete_mask(present, rows, labels, 0.2, "x", seed=3)


def test_load_splits_applies_it_to_training_and_validation_only():
    config = DataConfig(dataset="synthetic", dataset_options=TINY, complete_share=0.2, incomplete_modality="m0")
    splits = load_splits(config, seed=0)
    for name in ("train", "val"):
        view = splits[name]
        share = np.asarray(view.present["m0"])[view.rows].mean()
        assert 0.15 < share < 0.3 and np.asarray(view.present["m1"])[view.rows].all()
    assert np.asarray(splits.test.present["m0"])[splits.test.rows].all()
    assert resolve({"complete_share": 0.5}).to_dict()["data"]["complete_share"] == 0.5
    assert "complete_share" not in resolve({}).to_dict()["data"]  # earlier runs' configs unchanged


# ----- A modality that few samples of a batch have ----------------------------------------------


def test_a_single_present_row_trains_through_batch_normalisation_with_its_running_statistics():
    encoder = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.AdaptiveAvgPool2d(1))
    encoder.train()
    x = torch.randn(1, 1, 3, 3)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        encoder(x)
    mean, count = encoder[1].running_mean.clone(), int(encoder[1].num_batches_tracked)
    out = run_encoder(encoder, x)
    assert out.shape == (1, 4, 1, 1) and out.requires_grad and encoder[1].training
    assert torch.equal(encoder[1].running_mean, mean) and encoder[1].num_batches_tracked == count  # untouched
    run_encoder(encoder, torch.randn(2, 1, 3, 3))
    assert encoder[1].num_batches_tracked == count + 1


@pytest.mark.parametrize("name", ["mla", "joint"])
def test_a_batch_with_one_sample_of_a_modality_trains_encoders_with_batch_normalisation(tiny_splits, name):
    widths = {m: tiny_splits.train.input_shape(m)[0] for m in tiny_splits.train.modalities}
    custom = {m: torch.nn.Sequential(torch.nn.Linear(w, 8), torch.nn.BatchNorm1d(8)) for m, w in widths.items()}
    options = resolve({"strategy": name}).options
    encoder = EncoderConfig(dim=8, hidden=(16,), absent="zero-features")
    strategy = build_strategy(name, tiny_splits, encoder, options, custom=custom)
    Trainer.attach(strategy, TrainConfig(batch_size=32, lr=0.1))
    strategy.train()
    batch = tiny_splits.train.gather(np.arange(4))
    batch.present["m0"][1:] = False  # one sample with m0, four with m1
    out = frozen_step(strategy, batch)
    assert torch.isfinite(out.loss) and custom["m0"][0].weight.grad.abs().sum() > 0


# ----- ModDrop ----------------------------------------------------------------------------------


def test_drop_masks_keep_one_modality_per_sample_at_the_rate():
    present = {m: torch.ones(20000, dtype=torch.bool) for m in ("a", "v", "t")}
    present["t"][::2] = False
    kept = drop_masks(present, 0.5, torch.Generator().manual_seed(0))
    table = torch.stack(list(kept.values()), 1)
    assert table.any(1).all() and not (kept["t"] & ~present["t"]).any()
    assert 0.5 < float(kept["a"].float().mean()) < 0.6  # 0.5, plus the restored ones
    unchanged = drop_masks(present, 0.0, torch.Generator())
    assert all(torch.equal(unchanged[m], present[m]) for m in present)


def test_moddrop_subsets_are_as_likely_as_its_docstring_says():
    import altmodal.strategies.moddrop as moddrop

    present = {m: torch.ones(40000, dtype=torch.bool) for m in ("a", "v")}
    kept = drop_masks(present, 0.5, torch.Generator().manual_seed(0))
    both = float((kept["a"] & kept["v"]).float().mean())
    alone = [float((kept[m] & ~kept[o]).float().mean()) for m, o in (("a", "v"), ("v", "a"))]
    assert both == pytest.approx(0.25, abs=0.01) and alone == pytest.approx([0.375, 0.375], abs=0.01)
    text = " ".join(moddrop.__doc__.split())
    assert "0.25 and 0.375 each" in text and "equal chances" not in text and "keeps one" in text


def test_moddrop_trains_on_dropped_modalities(tiny_splits, monkeypatch):
    moddrop = build("moddrop", tiny_splits, moddrop_rate=0.9)
    seen = []
    original = type(moddrop).__mro__[1].training_step
    monkeypatch.setattr(type(moddrop).__mro__[1], "training_step", lambda self, b: seen.append(b) or original(self, b))
    moddrop.training_step(tiny_splits.train.gather(np.arange(64)))
    table = torch.stack([seen[0].present[m] for m in moddrop.modalities], 1)
    assert table.any(1).all() and (table.sum(1) == 1).float().mean() > 0.7
    assert all(torch.equal(seen[0].rows(m), seen[0].present[m]) for m in moddrop.modalities)
    assert (seen[0].inputs["m0"][~seen[0].present["m0"]] == 0).all()


# ----- ShaSpec ----------------------------------------------------------------------------------


def test_mean_present_by_hand():
    features = {"a": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "v": torch.tensor([[5.0, 6.0], [7.0, 8.0]])}
    present = {"a": torch.tensor([True, False]), "v": torch.tensor([True, True])}
    assert torch.equal(mean_present(features, present), torch.tensor([[3.0, 4.0], [7.0, 8.0]]))


def test_shaspec_fills_an_absent_modality_from_the_shared_features(tiny_splits):
    for fill in ("mean", "first"):
        sha = build("shaspec", tiny_splits, shaspec_fill=fill)
        batch = tiny_splits.train.gather(np.arange(4))
        features = sha.encode(batch)
        r = {m: f[:, :8] for m, f in features.items()}
        present = {"m0": torch.tensor([True, True, False, True]), "m1": torch.tensor([True, False, True, True])}
        with torch.no_grad():
            got = sha.fuse(features, present)
            f = {m: r[m] + sha.project(features[m]) for m in sha.modalities}
            f["m1"] = torch.where(present["m1"][:, None], f["m1"], r["m0"])  # row 1: only m0, whichever rule
            f["m0"] = torch.where(present["m0"][:, None], f["m0"], r["m1"])
            assert torch.allclose(got, sha.head(torch.cat([f["m0"], f["m1"]], 1)), atol=1e-6)
    assert isinstance(sha.trunk, torch.nn.Identity) and list(sha.stems) == ["all"]  # equal inputs: one encoder


def test_shaspec_loss_by_hand(tiny_splits):
    sha = build("shaspec", tiny_splits)
    batch = tiny_splits.train.gather(np.arange(32))
    features = sha.encode(batch)
    task = F.cross_entropy(sha.fuse(features, batch.present), batch.label)
    align = (features["m0"][:, :8] - features["m1"][:, :8]).abs().mean()
    domain = sum(
        F.cross_entropy(sha.domain(features[m][:, 8:]), torch.full((32,), j)) for j, m in enumerate(sha.modalities)
    )
    expected = task + 0.1 * align + 0.02 * domain / 2
    assert float(frozen_step(sha, batch).loss) == pytest.approx(float(expected.detach()), rel=1e-5)


@pytest.mark.parametrize("absent", ["zero-features", "zero-inputs"])
def test_shaspec_runs_its_shared_encoders_where_every_encoder_runs(tiny_splits, absent):
    widths = {m: tiny_splits.train.input_shape(m)[0] for m in tiny_splits.train.modalities}
    custom = {m: torch.nn.Sequential(torch.nn.Linear(w, 8), torch.nn.BatchNorm1d(8)) for m, w in widths.items()}
    options = resolve({"strategy": "shaspec"}).options
    sha = build_strategy(
        "shaspec", tiny_splits, EncoderConfig(dim=8, hidden=(16,), absent=absent), options, custom=custom
    )
    Trainer.attach(sha, TrainConfig(batch_size=32, lr=0.1))
    sha.train()
    rows: list[int] = []
    sha.stems["all"].register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    batch = tiny_splits.train.gather(np.arange(4 if absent == "zero-features" else 1))
    batch.present["m0"][1:] = False  # one sample with m0
    features = sha.encode(batch)
    if absent == "zero-features":  # absent rows never reach the shared stem, and their features are zero
        assert rows == [1, 4] and bool((features["m0"][1:] == 0).all())
    out = frozen_step(sha, batch)  # a lone sample passes batch normalisation on its running statistics
    assert torch.isfinite(out.loss) and sha.stems["all"][0].weight.grad.abs().sum() > 0


def test_shaspec_shares_a_trunk_across_encoders_of_different_inputs():
    splits = load_splits(DataConfig(dataset="synthetic", dataset_options=(*TINY[:2], "widths=8,5", "latent_dim=4")), 0)
    sha = build("shaspec", splits)
    assert list(sha.stems) == ["m0", "m1"] and isinstance(sha.trunk, torch.nn.Sequential)
    with pytest.raises(ValueError, match="needs encoders of one architecture"):
        build("shaspec", splits, shaspec_shared="encoder")


# ----- SMIL -------------------------------------------------------------------------------------


def test_centres_keep_their_identities_from_one_fit_to_the_next():
    generator = torch.Generator().manual_seed(0)
    x = torch.cat(
        [torch.randn(50, 2, generator=generator) * 0.1 + c for c in (torch.tensor([5.0, 0]), torch.tensor([0, 5.0]))]
    )
    first = centres(x, 2, generator)
    again = centres(x + 0.3, 2, generator, start=first)
    assert torch.allclose(again, first + 0.3, atol=1e-6)  # the same order: centre k still means cluster k


def test_smil_reconstructs_an_absent_feature_from_the_priors(tiny_splits):
    smil = build("smil", tiny_splits)
    smil.priors.copy_(torch.randn(smil.priors.shape))
    smil.eval()
    features = {m: torch.rand(3, 8) for m in smil.modalities}
    present = {"m0": torch.tensor([True, True, True]), "m1": torch.tensor([True, False, False])}
    with torch.no_grad():
        u = smil.fused_feature(features, present)[0]
        w = F.softplus(smil.weights["m1"](features["m0"])[:, : smil.priors.shape[1]])
        guess = (w / w.sum(1, keepdim=True)) @ smil.priors[1]
        mu = smil.perturb(mean_present(features, present))[:, :16]
        expected = torch.cat([features["m0"], torch.where(present["m1"][:, None], features["m1"], guess)], 1)
        assert torch.allclose(u, expected + F.softplus(mu), atol=1e-6)


def smil_gradients(splits, **options):
    """One frozen SMIL step on a batch whose half lacks m1: the reconstruction's and the head's gradients."""
    smil = build("smil", splits, smil_perturb="off", **options)
    smil.priors.copy_(torch.randn(smil.priors.shape))
    smil.on_fit_start(splits)  # the complete samples that judge the adaptation
    batch = splits.train.gather(np.arange(32))
    present = dict(batch.present)
    present["m1"] = torch.arange(32) % 2 == 0  # half the samples lack m1: they adapt
    out = frozen_step(smil, batch.with_present(present))
    assert out.loss.isfinite()
    grads = [smil.weights["m1"].weight.grad, smil.head.weight.grad]
    return [0.0 if g is None else float(g.norm()) for g in grads]


def test_smil_reconstruction_learns_through_the_inner_step_only_at_second_order(tiny_splits):
    reconstruction, head = smil_gradients(tiny_splits)
    assert 0 < reconstruction < 1e-2 * head  # the paper's form: a faint second-order gradient
    reconstruction, head = smil_gradients(tiny_splits, smil_outer="code", smil_first_order=True)
    assert reconstruction > 1e-2 * head  # the code's outer loss reconstructs: it reaches at first order


def test_smil_refuses_a_first_order_paper_form_and_warns_of_the_paper_form(tiny_splits, caplog):
    for cut in ({"smil_first_order": True}, {"smil_inner_lr": 0.0}):
        with pytest.raises(ValueError, match="would leave the reconstruction network untrained"):
            build("smil", tiny_splits, **cut)
        build("smil", tiny_splits, smil_outer="code", **cut)  # the code's outer loss reconstructs
    with caplog.at_level("WARNING", logger="altmodal.strategies.smil"):
        build("smil", tiny_splits).on_fit_start(tiny_splits)
        build("smil", tiny_splits, smil_outer="code").on_fit_start(tiny_splits)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "barely learns" in lines[0] and "\n" not in lines[0]


def test_smil_priors_follow_the_encoders_each_epoch(tmp_path):
    metrics = train_run(tiny_config(strategy="smil", epochs=6, complete_share=0.3), tmp_path)
    from safetensors.torch import load_file

    priors = load_file(tmp_path / "model.safetensors")["priors"]
    assert priors.shape == (2, 3, 8) and priors.abs().sum() > 0 and metrics["test"]["fused"]["accuracy"] > 0.5
