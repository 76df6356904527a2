"""Encoder shapes, kinds and strict loading of local weights."""

import numpy as np
import pytest
import torch
from torch import nn

from altmodal.encoders import EncoderConfig, build_encoder, load_weights, weights_by_modality
from altmodal.encoders.resnet import ResNet18

SMALL = EncoderConfig(dim=12, resnet_width=4, text_width=16, text_layers=1, text_heads=2)


def test_resnet18_layout():
    net = ResNet18(3, 64)
    assert [len(getattr(net, f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]
    assert net.out_channels == 512
    assert sum(p.numel() for p in net.parameters()) == 11_176_512  # torchvision's resnet18 minus fc
    assert net(torch.zeros(1, 3, 64, 64)).shape == (1, 512, 2, 2)


@pytest.mark.parametrize(
    "kind, shape, x",
    [
        ("resnet18-audio", (40, 16), torch.randn(3, 40, 16)),
        ("resnet18-visual", (3, 3, 16, 16), torch.randn(3, 3, 3, 16, 16)),
        ("resnet18-visual", (1, 1, 28, 28), torch.randn(3, 1, 1, 28, 28)),
        ("text:50", (10,), torch.tensor([[5, 6, 7, 0, 0, 0, 0, 0, 0, 0]] * 3, dtype=torch.float32)),
        ("mlp", (7,), torch.randn(3, 7)),
        ("ple", (7,), torch.randn(3, 7)),
    ],
)
def test_every_kind_outputs_dim_features(kind, shape, x):
    encoder = build_encoder(kind, shape, SMALL)
    out = encoder(x)
    assert out.shape == (3, 12) and encoder.out_dim == 12 and torch.isfinite(out).all()


def test_projection_only_when_widths_differ():
    assert isinstance(build_encoder("resnet18-audio", (32, 8), EncoderConfig(dim=512)).proj, nn.Identity)
    projected = build_encoder("resnet18-audio", (32, 8), EncoderConfig(dim=512, resnet_width=8)).proj
    assert isinstance(projected, nn.Linear) and (projected.in_features, projected.out_features) == (64, 512)


def test_visual_features_average_over_frames():
    encoder = build_encoder("resnet18-visual", (2, 3, 16, 16), SMALL).eval()
    frame = torch.randn(1, 1, 3, 16, 16)
    assert torch.allclose(encoder(frame.expand(1, 2, 3, 16, 16)), encoder(frame), atol=1e-6)


def test_text_encoder_ignores_padding_and_survives_empty_rows():
    encoder = build_encoder("text:30", (8,), SMALL).eval()
    ids = torch.tensor([[3, 4, 5, 0, 0, 0, 0, 0], [0] * 8], dtype=torch.float32)
    out = encoder(ids)
    assert torch.isfinite(out).all()
    longer = torch.tensor([[3, 4, 5, 0, 0, 0, 0, 0]], dtype=torch.float32)
    assert torch.allclose(encoder(longer), out[:1], atol=1e-5)
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters() if p.grad is not None)
    with pytest.raises(ValueError, match="token id 30 is outside the text encoder's vocabulary of 30"):
        encoder(torch.tensor([[30.0] * 8]))


def test_bad_kinds_and_shapes():
    with pytest.raises(ValueError, match="unknown encoder kind 'cnn'"):
        build_encoder("cnn", (3,), SMALL)
    with pytest.raises(ValueError, match="after 'text:' must be a positive integer"):
        build_encoder("text:abc", (8,), SMALL)
    with pytest.raises(ValueError, match=r"resnet18-audio expects \(frames, bins\)"):
        build_encoder("resnet18-audio", (3, 8, 8), SMALL)
    with pytest.raises(ValueError, match="--weights 'audio' is not of the form modality=path"):
        weights_by_modality(["audio"])


def test_weights_load_strictly_from_encoder_backbone_or_run_files(tmp_path):
    source = build_encoder("resnet18-audio", (32, 8), SMALL).eval()
    x = torch.randn(2, 32, 8)
    path = tmp_path / "audio.pt"
    torch.save(source.state_dict(), path)
    config = EncoderConfig(**{**SMALL.__dict__, "weights": (f"audio={path}",)})
    loaded = build_encoder("resnet18-audio", (32, 8), config, "audio").eval()
    assert torch.allclose(loaded(x), source(x))
    other = build_encoder("resnet18-audio", (32, 8), config, "visual").eval()  # weights name another modality
    assert not torch.allclose(other(x), source(x))

    backbone = tmp_path / "backbone.pt"
    torch.save(source.backbone.state_dict(), backbone)
    fresh = build_encoder("resnet18-audio", (32, 8), SMALL)
    load_weights(fresh, backbone, "audio")
    assert all(
        torch.equal(a, b) for a, b in zip(fresh.backbone.state_dict().values(), source.backbone.state_dict().values())
    )

    run_file = tmp_path / "model.pt"  # what `altmodal train` saves: {"model": strategy state dict}
    torch.save({"model": {f"encoders.audio.{k}": v for k, v in source.state_dict().items()}, "best_epoch": 3}, run_file)
    from_run = build_encoder("resnet18-audio", (32, 8), SMALL).eval()
    load_weights(from_run, run_file, "audio")
    assert torch.allclose(from_run(x), source(x))


def test_mismatched_weights_name_the_file_and_entries(tmp_path):
    path = tmp_path / "wide.pt"
    torch.save(build_encoder("resnet18-audio", (32, 8), EncoderConfig(dim=12, resnet_width=8)).state_dict(), path)
    target = build_encoder("resnet18-audio", (32, 8), SMALL)
    with pytest.raises(
        ValueError, match=r"wide.pt: weights do not fit the 'audio' encoder .*backbone.conv1.weight has shape"
    ):
        load_weights(target, path, "audio", "resnet18-audio")
    extra = tmp_path / "extra.pt"
    torch.save({**target.state_dict(), "fc.weight": torch.zeros(2, 2)}, extra)
    with pytest.raises(ValueError, match=r"unexpected fc.weight"):
        load_weights(target, extra, "audio")
    with pytest.raises(ValueError, match=r"nothing.pt: no such weights file"):
        load_weights(target, tmp_path / "nothing.pt", "audio")
    (tmp_path / "junk.pt").write_text("junk")
    with pytest.raises(ValueError, match=r"junk.pt: not a readable torch weights file"):
        load_weights(target, tmp_path / "junk.pt", "audio")


def test_piecewise_linear_encoder_fits_quantile_edges_and_reads_them_back():
    from altmodal.encoders.numeric import PiecewiseLinearEncoder

    config = EncoderConfig(dim=12, hidden=(16,), ple_bins=4)
    encoder = build_encoder("ple", (2,), config)
    assert isinstance(encoder, PiecewiseLinearEncoder) and encoder.edges.shape == (2, 5)
    x = torch.stack([torch.arange(9.0), torch.tensor([0.0] * 5 + [1.0] * 4)], dim=1)  # one feature of 2 values
    encoder.fit(x)
    assert torch.allclose(encoder.edges[0], torch.tensor([0.0, 2.0, 4.0, 6.0, 8.0]))  # quantiles
    assert (encoder.edges[1].diff() > 0).all()  # tied edges pulled apart: bins stay ordered
    out = encoder(x)
    assert out.shape == (9, 12) and torch.isfinite(out).all()
    again = build_encoder("ple", (2,), config)  # a saved run rebuilds the same shapes without data
    again.load_state_dict(encoder.state_dict())
    assert torch.equal(again(x), out) and torch.equal(again.edges, encoder.edges)


def test_piecewise_linear_encoding_is_the_value_then_each_bins_fill():
    from altmodal.encoders.numeric import PiecewiseLinearEncoder

    encoder = PiecewiseLinearEncoder((1,), (4,), 3, bins=2)
    encoder.fit(torch.tensor([[0.0], [1.0], [2.0]]))  # edges 0, 1, 2
    seen = {}
    encoder.mlp.register_forward_hook(lambda _, inputs, __: seen.update(x=inputs[0]))
    encoder(torch.tensor([[-1.0], [0.5], [1.5], [3.0]]))
    expected = [[-1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [1.5, 1.0, 0.5], [3.0, 1.0, 1.0]]
    assert torch.allclose(seen["x"], torch.tensor(expected))


def test_feature_encoder_auto_encodes_narrow_vectors_piecewise_linearly():
    from altmodal.encoders import PLE_WIDTH, encoder_kinds, feature_kind

    assert feature_kind("auto", (PLE_WIDTH,)) == "ple" and feature_kind("auto", (PLE_WIDTH + 1,)) == "mlp"
    assert feature_kind("auto", (4, 4)) == "mlp" and feature_kind("mlp", (5,)) == "mlp"
    config = EncoderConfig(feature_encoder="ple", kinds=("b=mlp",))
    shapes = {"a": (5,), "b": (5,), "c": (1, 8, 8)}
    assert encoder_kinds({"c": "resnet18-visual"}, shapes, config) == {"a": "ple", "b": "mlp", "c": "resnet18-visual"}


def test_a_ple_run_fits_its_edges_on_the_training_split_and_reloads(tmp_path):
    from altmodal.data.registry import load_splits
    from altmodal.experiment import train_run
    from altmodal.predictor import load_run
    from tests.conftest import tiny_config

    config = tiny_config(feature_encoder="ple", ple_bins=3)
    result = train_run(config, tmp_path / "run")
    card = (tmp_path / "run" / "model.json").read_text()
    assert '"encoder": "ple"' in card
    train = load_splits(config.data, config.train.seed).train
    x = train.gather(np.arange(len(train))).inputs["m0"]
    edges = result.model.strategy.encoders["m0"].edges
    assert torch.allclose(edges[:, [0, -1]], torch.stack([x.min(0).values, x.max(0).values], dim=1), atol=1e-5)
    again = load_run(tmp_path / "run")
    assert torch.equal(again.strategy.encoders["m0"].edges, edges)
    assert np.array_equal(
        again.predict_proba(x_inputs := {m: v.numpy() for m, v in train.gather(np.arange(5)).inputs.items()}),
        result.model.predict_proba(x_inputs),
    )


def test_a_cross_fitted_ple_run_reloads_each_members_own_edges(tmp_path):
    from altmodal.experiment import evaluate_run, train_run
    from altmodal.predictor import load_run
    from tests.conftest import tiny_config

    result = train_run(tiny_config(feature_encoder="ple", folds=2, learners=("none",)), tmp_path / "run")
    trained = [member.encoders["m0"].edges for member in result.model.strategy.members]
    assert not torch.equal(trained[0], trained[1])  # each member's edges come from its own rows
    again = load_run(tmp_path / "run")
    assert all(torch.equal(m.encoders["m0"].edges, e) for m, e in zip(again.strategy.members, trained))
    assert evaluate_run(tmp_path / "run")["test"]["fused"] == result["test"]["fused"]
