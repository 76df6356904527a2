"""CREMA-D end to end on fabricated files: prepare, skip reports, --strict, resume, load, train."""

import json
from dataclasses import replace

import numpy as np
import pytest

from altmodal import prepare as prepare_module
from altmodal.cli import main
from altmodal.data.corpora import cremad
from altmodal.data.corpora.cache import open_cache
from altmodal.data.features import DataError
from altmodal.data.registry import DataConfig, load_splits
from altmodal.prepare import prepare
from tests.media_fakes import CREMA_CLASSES, fake_cremad

pytest.importorskip("soundfile")
pytest.importorskip("av")
pytest.importorskip("PIL")

SMALL = {"bins": "16", "frames": "40", "image_size": "12"}


@pytest.fixture
def raw(tmp_path):
    root = tmp_path / "raw"
    clips = fake_cremad(root)
    return root, clips


def options(root, **extra):
    return {"lists": str(root / "lists"), **SMALL, **extra}


def test_prepare_writes_the_cache_format(raw, tmp_path):
    root, clips = raw
    summary = prepare("cremad", root, tmp_path / "cache", options(root))
    assert summary.num_samples == 24 and summary.splits == {"train": 18, "test": 6} and not summary.skipped
    meta = json.loads((tmp_path / "cache" / "meta.json").read_text())
    assert meta["status"] == "complete" and meta["classes"] == CREMA_CLASSES
    assert meta["modalities"]["audio"]["shape"] == [40, 16] and meta["modalities"]["audio"]["kind"] == "resnet18-audio"
    assert meta["modalities"]["visual"]["shape"] == [3, 3, 12, 12] and meta["modalities"]["visual"]["dtype"] == "uint8"
    cache = open_cache(tmp_path / "cache", "cremad")
    assert cache.arrays["audio"].dtype == np.float16 and isinstance(cache.arrays["audio"], np.memmap)
    keys = cache.keys.tolist()
    assert keys[:6] == clips["train"][:6] and set(cache.group.tolist()) == {"1001", "1002", "1003", "1004"}
    assert [CREMA_CLASSES[i] for i in cache.labels[:6]] == CREMA_CLASSES
    # the first actor's frames come from the extracted folders (distinct per frame), the others from .flv
    first = np.asarray(cache.arrays["visual"][0])
    assert not np.array_equal(first[0], first[1])
    assert (
        np.asarray(cache.arrays["audio"][0][:28]).std() > 0 and (np.asarray(cache.arrays["audio"][0][28:]) == 0).all()
    )


def test_loader_splits_kinds_and_transforms(raw, tmp_path):
    root, _ = raw
    prepare("cremad", root, tmp_path / "cache", options(root))
    splits = load_splits(DataConfig(dataset="cremad", data_dir=str(tmp_path / "cache"), dataset_options=("crop=8",)), 0)
    assert splits.train.kinds == {"audio": "resnet18-audio", "visual": "resnet18-visual"}
    assert (len(splits.train), len(splits.val), len(splits.test)) == (12, 6, 6)
    test_keys = {str(k)[:4] for k in open_cache(tmp_path / "cache", "cremad").keys[splits.test.rows]}
    assert test_keys == {"1004"}
    batch = splits.train.gather(np.arange(4))
    assert batch.inputs["visual"].shape == (4, 3, 3, 8, 8) and batch.inputs["audio"].shape == (4, 40, 16)
    assert batch.inputs["visual"].abs().max() < 3  # normalised
    speaker = DataConfig(
        dataset="cremad", data_dir=str(tmp_path / "cache"), dataset_options=("split=speaker", "test_speakers=1002")
    )
    split = load_splits(speaker, 0)
    cache = open_cache(tmp_path / "cache", "cremad")
    assert set(cache.group[split.test.rows]) == {"1002"}
    assert "1002" not in set(cache.group[np.concatenate([split.train.rows, split.val.rows])])
    with pytest.raises(DataError, match=r"test_speakers='9999' must be a count or share of the 4 speakers \(1 to 3\)"):
        load_splits(
            DataConfig(
                dataset="cremad",
                data_dir=str(tmp_path / "cache"),
                dataset_options=("split=speaker", "test_speakers=9999"),
            ),
            0,
        )
    with pytest.raises(DataError, match="cremad: unknown option 'crpo'"):
        load_splits(DataConfig(dataset="cremad", data_dir=str(tmp_path / "cache"), dataset_options=("crpo=8",)), 0)


def test_corrupt_and_missing_files_are_reported_counted_and_marked_absent(raw, tmp_path):
    root, clips = raw
    bad_audio, no_video = clips["train"][7], clips["train"][8]
    (root / "AudioWAV" / f"{bad_audio}.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    (root / "VideoFlash" / f"{no_video}.flv").unlink()
    (root / "AudioWAV" / f"{no_video}.wav").unlink()  # nothing left for this clip
    summary = prepare("cremad", root, tmp_path / "cache", options(root))
    reasons = {(r["key"], r["modality"]): r for r in summary.skipped}
    assert len(summary.skipped) == 3
    assert "cannot decode audio" in reasons[(bad_audio, "audio")]["reason"]
    assert reasons[(bad_audio, "audio")]["file"].endswith(f"{bad_audio}.wav")
    assert reasons[(no_video, "visual")]["reason"].startswith("no video or frame folder here")
    assert summary.dropped == [no_video]
    cache = open_cache(tmp_path / "cache", "cremad")
    row = cache.keys.tolist().index(bad_audio)
    assert not cache.present["audio"][row] and cache.present["visual"][row]
    splits = load_splits(DataConfig(dataset="cremad", data_dir=str(tmp_path / "cache")), 0)
    used = np.concatenate([splits.train.rows, splits.val.rows, splits.test.rows])
    assert cache.keys.tolist().index(no_video) not in used and row in used


def test_strict_stops_at_the_first_unusable_file(raw, tmp_path, capsys):
    root, clips = raw
    (root / "AudioWAV" / f"{clips['train'][2]}.wav").write_bytes(b"junk")
    argv = ["prepare", "cremad", "--root", str(root), "--out", str(tmp_path / "cache"), "--strict", "--quiet"]
    argv += [a for k, v in options(root).items() for a in ("--option", f"{k}={v}")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{clips['train'][2]}.wav: cannot decode audio" in err and "--strict" in err
    with pytest.raises(DataError, match="preparation is unfinished"):
        open_cache(tmp_path / "cache", "cremad")
    assert main([a for a in argv if a != "--strict"]) == 0
    assert "skipped 1 unusable file(s)" in capsys.readouterr().out


def test_prepare_resumes_where_it_stopped(raw, tmp_path, monkeypatch):
    root, _ = raw
    reference = prepare("cremad", root, tmp_path / "clean", options(root))
    calls = {"n": 0}

    def interrupting_plan(root_, raw_, previous):
        plan = cremad.plan(root_, raw_, previous)

        def counted(source):
            def read():
                calls["n"] += 1
                if calls["n"] == 11:
                    raise KeyboardInterrupt
                return source.read()

            return replace(source, read=read)

        plan.items = [replace(i, sources={**i.sources, "audio": counted(i.sources["audio"])}) for i in plan.items]
        return plan

    monkeypatch.setitem(prepare_module.CORPORA, "cremad", replace(cremad.CORPUS, plan=interrupting_plan))
    with pytest.raises(KeyboardInterrupt):
        prepare("cremad", root, tmp_path / "cache", options(root), checkpoint_every=4)
    progress = np.load(tmp_path / "cache" / "progress.npz")
    assert progress["done"].sum() == 10  # every finished sample was saved on the way out
    summary = prepare("cremad", root, tmp_path / "cache", options(root), checkpoint_every=4)
    assert summary.done_before == 10 and calls["n"] == 11 + 14
    assert reference.num_samples == summary.num_samples
    for name in ("audio", "visual", "present"):
        assert np.array_equal(np.load(tmp_path / "clean" / f"{name}.npy"), np.load(tmp_path / "cache" / f"{name}.npy"))
    again = prepare("cremad", root, tmp_path / "cache", options(root))
    assert again.done_before == again.num_samples  # complete: nothing decoded
    assert calls["n"] == 25
    with pytest.raises(DataError, match="holds a cremad cache prepared from other files or settings"):
        prepare("cremad", root, tmp_path / "cache", options(root, bins="20"))


def test_cli_prepare_then_train_one_epoch(raw, tmp_path, capsys):
    root, _ = raw
    cache, run = tmp_path / "cache", tmp_path / "run"
    argv = ["prepare", "cremad", "--root", str(root), "--out", str(cache), "--quiet"]
    argv += [a for k, v in options(root).items() for a in ("--option", f"{k}={v}")]
    assert main(argv) == 0
    assert "prepared cremad: 24 samples (train 18, test 6)" in capsys.readouterr().out
    train = ["train", "--dataset", "cremad", "--data-dir", str(cache), "--strategy", "mla", "--epochs", "1"]
    train += ["--batch-size", "6", "--resnet-width", "4", "--dim", "8", "--dataset-option", "crop=8", "--quiet"]
    assert main([*train, "--out", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["modalities"] == ["audio", "visual"] and 0 <= metrics["test"]["fused"]["accuracy"] <= 1
    config = json.loads((run / "config.json").read_text())
    assert config["encoder"]["dim"] == 8 and config["encoder"]["resnet_width"] == 4
    assert main(["train", "--dataset", "cremad", "--out", str(tmp_path / "r2"), "--quiet"]) == 2
    assert "cremad: needs --data-dir" in capsys.readouterr().err


def test_prepare_refuses_other_folders_and_datasets(raw, tmp_path):
    root, _ = raw
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("years of work")
    with pytest.raises(DataError, match="busy: the folder is not empty and holds no cache"):
        prepare("cremad", root, tmp_path / "busy", options(root))
    with pytest.raises(DataError, match="unknown media dataset 'mnist'"):
        prepare("mnist", root, tmp_path / "x")
    prepare("cremad", root, tmp_path / "cache", options(root))
    with pytest.raises(DataError, match="holds a 'cremad' cache; choose another --out for 'mvsa'"):
        prepare("mvsa", root, tmp_path / "cache")
    with pytest.raises(DataError, match="holds a 'cremad' cache, not 'iemocap'"):
        open_cache(tmp_path / "cache", "iemocap")
