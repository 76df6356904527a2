"""The accelerator path: no host syncs in a step, the prefetching pipeline, mixed precision,
channels-last ResNets."""

import json
import sys

import numpy as np
import pytest
import torch

from altmodal.config import ConfigError
from altmodal.data.dataset import EpochBatches, MultimodalDataset, iterate
from altmodal.data.media.image import ImageTransform
from altmodal.data.pipeline import prefetch
from altmodal.distributed import Dist
from altmodal.encoders import EncoderConfig, channels_last
from altmodal.encoders.resnet import VisualResNet
from altmodal.experiment import resolve, train_run
from altmodal.strategies import build_strategy
from altmodal.strategies.base import TrainConfig
from altmodal.trainer import EpochSums, Trainer
from tests.conftest import tiny_config

ENC = EncoderConfig(dim=8, hidden=(16,))
META = torch.device("meta")  # tensors without values: reading one back to the host raises


def with_missing_rows(batch):
    """The batch with modality m1 absent from its first five samples."""
    present = dict(batch.present)
    present["m1"] = present["m1"].clone()
    present["m1"][:5] = False
    return batch.with_present(present)


@pytest.mark.parametrize(
    "name, options",
    [
        ("joint", {}),
        ("ume", {}),
        ("qmf", {}),
        ("ogm_ge", {}),
        ("umt", {}),
        ("relearn", {}),
        ("mla", {}),
        ("mla", {"preset": "reference-code"}),
        ("mla", {"cycle": "iteration", "order": "random"}),
        ("mla", {"projection_method": "ogd"}),
        ("mla", {"projection_method": "pca-ogd", "cycle": "iteration", "order": "random"}),
        ("mmpareto", {}),
        ("mmpareto", {"pareto_rescale": "tensor", "pareto_clip": 0.001}),
        ("inforeg", {"inforeg_k": -1.0}),
        ("inforeg", {"inforeg_unimodal_loss": "heads"}),
        ("gblend", {}),
        ("dgl", {}),
        ("moddrop", {}),
        ("shaspec", {"shaspec_drop": 0.3}),
        ("smil", {}),
        ("smil", {"smil_outer": "code"}),
        ("aug", {"aug_step": "modality", "aug_score": "ensemble"}),
        ("reconboost", {}),
        ("reconboost", {"reconboost_cycle": "batch"}),
        ("midas", {"midas_warmup": 0}),
    ],
)
def test_a_training_step_never_reads_the_device(tiny_splits, name, options):
    strategy = build_strategy(name, tiny_splits, ENC, resolve({"strategy": name, **options}).options)
    Trainer.attach(strategy, TrainConfig(batch_size=16), Dist(device=META))
    batches = EpochBatches(tiny_splits.train, 16, shuffle=True)
    for b in range(3):  # steps of epochs 0, 1 and 2, so epoch-gated paths (InfoReg's window) run too
        strategy.trainer.epoch = strategy.trainer.batch_index = b
        batch = batches[b] if b else with_missing_rows(batches[b])
        out = strategy.training_step(batch.to(META))
        assert out.loss.device == META and all(logits.device == META for logits, _ in out.unimodal.values())


def test_an_epoch_reads_its_sums_once(tiny_splits, monkeypatch):
    strategy = build_strategy("mla", tiny_splits, ENC, resolve({"strategy": "mla"}).options)
    Trainer.attach(strategy, TrainConfig(batch_size=16), Dist(device=META))
    reads = []
    monkeypatch.setattr(EpochSums, "read", lambda self, dist, n: reads.append(n) or {"train_loss": 0.0})
    strategy.trainer.train_epoch(strategy, tiny_splits.train, 0)  # every step and the pipeline run on META
    assert reads == [len(tiny_splits.train)] and strategy.trainer.batches_per_epoch == -(-len(tiny_splits.train) // 16)


def image_dataset(n=24):
    rng = np.random.default_rng(0)
    present = rng.random(n) < 0.8
    return MultimodalDataset(
        name="images",
        arrays={"img": rng.integers(0, 256, (n, 3, 12, 12), dtype=np.uint8), "vec": rng.normal(size=(n, 5))},
        present={"img": present, "vec": np.ones(n, dtype=bool)},
        labels=rng.integers(0, 3, n),
        classes=["a", "b", "c"],
        rows=np.arange(n),
        transforms={"img": ImageTransform(train=True, size=8)},
    )


@pytest.mark.parametrize("loader, ahead, workers", [("loop", 1, 1), ("thread", 2, 1), ("workers", 3, 2)])
def test_prefetching_gives_the_same_batches_in_the_same_order(loader, ahead, workers):
    data = image_dataset()
    reference = list(iterate(data, 5, shuffle=True, seed=3, epoch=1))
    batches = EpochBatches(data, 5, shuffle=True, seed=3, epoch=1)
    got = list(prefetch(batches, torch.device("cpu"), loader, ahead=ahead, workers=workers))
    assert len(got) == len(reference) == 5
    for a, b in zip(got, reference):
        assert torch.equal(a.index, b.index) and torch.equal(a.label, b.label)
        assert all(torch.equal(a.inputs[m], b.inputs[m]) and torch.equal(a.present[m], b.present[m]) for m in a.inputs)
        assert a.counts == b.counts == {m: int(p.sum()) for m, p in b.present.items()}


def test_global_counts_cover_every_rank_share():
    data = image_dataset()
    ranks = [EpochBatches(data, 6, shuffle=True, rank=r, world_size=2)[0] for r in range(2)]
    assert ranks[0].counts == ranks[1].counts
    assert ranks[0].counts["img"] == sum(int(b.present["img"].sum()) for b in ranks)


def test_a_failing_producer_raises_in_the_loop():
    class Broken(EpochBatches):
        def __getitem__(self, b):
            raise OSError(f"cannot read batch {b}")

    with pytest.raises(OSError, match="cannot read batch 0"):
        list(prefetch(Broken(image_dataset(), 5, shuffle=False), torch.device("cpu")))


def test_a_seeded_run_is_the_same_with_or_without_prefetching(tmp_path):
    def metrics(name, **settings):
        out = train_run(tiny_config(strategy="mla", epochs=1, **settings), tmp_path / name)
        return {k: v for k, v in out.items() if k not in ("train_seconds", "seconds_per_epoch")}

    inline = metrics("inline", loader="loop")
    assert metrics("thread", loader="thread") == inline
    assert metrics("workers", loader="workers", workers=2) == inline
    history = [(tmp_path / n / "history.csv").read_text().splitlines() for n in ("inline", "thread")]
    drop_seconds = [[line.rsplit(",", 1)[0] for line in lines] for lines in history]
    assert drop_seconds[0] == drop_seconds[1]
    assert json.loads((tmp_path / "thread" / "config.json").read_text())["train"]["loader"] == "thread"


def test_the_loop_trains_as_a_plain_loop_over_the_batches(tiny_splits):
    def trained(loop):
        torch.manual_seed(0)
        mla = build_strategy("mla", tiny_splits, ENC, resolve({"strategy": "mla"}).options)
        Trainer.attach(mla, TrainConfig(batch_size=16, lr=0.1, loader="thread"))
        loop(mla)
        return mla.state_dict()

    def plain(mla):
        mla.trainer.epoch, mla.trainer.batches_per_epoch = 0, -(-len(tiny_splits.train) // 16)
        for mla.trainer.batch_index, batch in enumerate(iterate(tiny_splits.train, 16, shuffle=True)):
            mla.training_step(batch)

    a, b = trained(lambda mla: mla.trainer.train_epoch(mla, tiny_splits.train, 0)), trained(plain)
    assert all(torch.equal(a[k], b[k]) for k in a)


def mla_for(splits, **train):
    options = resolve({"strategy": "mla", "cycle": "iteration", "alpha": 1e-3}).options
    torch.manual_seed(0)
    mla = build_strategy("mla", splits, ENC, options)
    Trainer.attach(mla, TrainConfig(batch_size=32, lr=0.5, momentum=0.0, weight_decay=0.0, **train))
    return mla


@pytest.mark.parametrize("precision", ["bf16", "16"])
def test_projection_keeps_the_head_answer_on_earlier_features_under_mixed_precision(tiny_splits, precision):
    batch = tiny_splits.train.gather(np.arange(32))

    def change_on_m0(projection):
        mla = mla_for(tiny_splits, precision=precision)
        projector = mla.projector
        if not projection:  # the same run with the head gradient left alone

            def unprojected(weight, m, mean, alpha):
                projector.feature(m, mean)
                return False

            mla.projector.step = unprojected
        for mla.trainer.batch_index in (0, 1):  # an m0 step, then an m1 step
            if mla.trainer.batch_index == 1:  # h: the m0 feature the projector learned in the m0 step
                h, before = projector.means[0].clone(), mla.head("m0").weight.detach().clone()
            with mla.autocast():
                mla.training_step(batch)
        return float(((mla.head("m0").weight.detach() - before) @ h).norm())

    assert change_on_m0(projection=True) < 0.05 * change_on_m0(projection=False)


def test_fp16_edits_see_unscaled_gradients(tiny_splits):
    batch = tiny_splits.train.gather(np.arange(32))
    seen = {}

    def gradient(precision):
        mla = mla_for(tiny_splits, precision=precision)
        mla.projector = None
        mla._hgm = lambda *args: (lambda: seen.__setitem__(precision, mla.head("m0").weight.grad.clone()), None)
        with mla.autocast():
            mla.training_step(batch)
        return seen[precision]

    assert mla_for(tiny_splits, precision="16").trainer.scaler.get_scale() > 1000
    assert torch.allclose(gradient("16"), gradient("32"), rtol=0.05, atol=1e-3)


def test_precision_and_pipeline_settings_are_checked():
    with pytest.raises(ConfigError, match="--precision must be one of 32, bf16, 16"):
        TrainConfig(precision="8")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="--prefetch must be at least 1"):
        TrainConfig(prefetch=0)


def test_channels_last_keeps_the_numbers_and_is_cuda_only(tiny_splits):
    torch.manual_seed(0)
    encoder = VisualResNet((2, 3, 16, 16), dim=8, width=4)
    x = torch.randn(3, 2, 3, 16, 16)
    encoder.eval()
    before = encoder(x)
    assert channels_last(torch.nn.ModuleDict({"v": encoder}))
    assert encoder.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(encoder(x), before, atol=1e-5)
    assert not channels_last(torch.nn.Linear(2, 2))
    mla = mla_for(tiny_splits)  # on the CPU nothing changes layout
    assert not any(getattr(m, "channels_last", False) for m in mla.modules())


def test_speed_benchmark_prints_every_strategy_against_joint(capsys, tmp_path, monkeypatch):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"
    spec = importlib.util.spec_from_file_location("speed_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    out = tmp_path / "speed.json"
    module.main(
        ["--quick", "--strategies", "joint,mla", "--epochs", "1", "--skip", "pipeline,scaling", "--json", str(out)]
    )
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("| joint", "| mla"))]
    assert len(rows) == 2 and rows[0].split("|")[6].strip() == "1.00"
    timings = json.loads(out.read_text())["strategies: mfeat fou,mor, batch 64"]
    assert set(timings) == {"joint", "mla"} and all(
        len(t["seconds"]) == 1 and t["peak_mib"] > 0 for t in timings.values()
    )
