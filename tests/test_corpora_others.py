"""Kinetics-Sounds, Food-101, MVSA-Single and IEMOCAP on fabricated raw layouts; published lists."""

import json

import numpy as np
import pytest

from altmodal.data.corpora.cache import open_cache
from altmodal.data.corpora.common import Options, listed_rows, read_classes
from altmodal.data.features import DataError
from altmodal.data.registry import DataConfig, load_splits
from altmodal.prepare import prepare
from tests.media_fakes import SHARED_DATA, write_image, write_lists, write_video, write_wav

pytest.importorskip("soundfile")
pytest.importorskip("PIL")
pytest.importorskip("tokenizers")

FOODS = ["apple_pie", "baklava", "sushi"]
WORDS = {"apple_pie": "apple cinnamon crust", "baklava": "honey walnut pastry", "sushi": "rice fish seaweed"}


def splits_of(cache_dir, dataset, *options):
    return load_splits(DataConfig(dataset=dataset, data_dir=str(cache_dir), dataset_options=options), 0)


def test_kinetics_sounds_class_file_selects_a_subset(tmp_path):
    pytest.importorskip("av")
    root = tmp_path / "ks"
    rows = {"train": [], "test": []}
    for i, label in enumerate(["playing_drums", "playing_flute", "dancing"] * 4):
        split = "test" if i >= 9 else "train"
        clip = f"clip{i}"
        write_wav(root / "audio" / split / f"{clip}.wav", seconds=0.4, freq=300 + 50 * i)
        if i % 2:
            write_video(root / "visual" / split / f"{clip}.mp4", seconds=3, fps=2, size=16)
        else:
            for s in range(3):
                write_image(root / "visual" / f"{split}_imgs" / "Image-01-FPS" / clip / f"{s:05d}.jpg", (40 * s, 0, 0))
        rows[split].append((f"{clip}.mp4", label))
    write_lists(root, "ks", rows["train"], rows["test"], ["playing_drums", "playing_flute"])
    summary = prepare("kinetics-sounds", root, tmp_path / "cache", {"bins": "16", "frames": "32", "image_size": "8"})
    assert summary.num_samples == 8 and not summary.skipped
    assert len(summary.notes) == 2 and "1 rows left out, their labels are not in the class list" in summary.notes[1]
    splits = splits_of(tmp_path / "cache", "kinetics-sounds")
    assert splits.num_classes == 2 and splits.train.input_shape("visual") == (3, 3, 8, 8)


def fake_food(root, layout):
    """3 classes x (3 train + 1 test) images; texts inline (jsonl) or in texts_txt/ (original)."""
    rows = {"train": [], "test": []}
    records = {"train": [], "test": []}
    for c, label in enumerate(FOODS):
        for k in range(4):
            split = "test" if k == 3 else "train"
            name = f"{label}_{k}.jpg"
            text = f"recipe {WORDS[label]} number {k}" + (" zebraword" if split == "test" else "")
            image = f"images/{split}/{label}/{name}"
            write_image(root / image, (80 * c, 20 * k, 50), (30, 20))
            if layout == "jsonl":
                records[split].append(json.dumps({"img": image, "text": text, "label": label}))
            else:
                (root / "texts_txt" / label).mkdir(parents=True, exist_ok=True)
                (root / "texts_txt" / label / f"{label}_{k}.txt").write_text(text)
            rows[split].append((name, label))
    if layout == "jsonl":
        for split, lines in records.items():
            (root / f"{'dev' if split == 'test' else split}.jsonl").write_text("\n".join(lines) + "\n")
    write_lists(root, "food", rows["train"], rows["test"], FOODS)


@pytest.mark.parametrize("layout", ["jsonl", "original"])
def test_food101_images_and_texts_with_a_vocabulary_from_training_texts(tmp_path, layout):
    root = tmp_path / "food"
    fake_food(root, layout)
    opts = {"image_size": "16", "max_tokens": "12", "min_frequency": "1"}
    summary = prepare("food101", root, tmp_path / "cache", opts)
    assert summary.num_samples == 12 and summary.splits == {"train": 9, "test": 3} and not summary.skipped
    vocab = json.loads((tmp_path / "cache" / "tokenizer.json").read_text())["model"]["vocab"]
    assert "cinnamon" in vocab and "zebraword" not in vocab and vocab["[PAD]"] == 0
    cache = open_cache(tmp_path / "cache", "food101")
    assert cache.spec("text")["kind"] == f"text:{len(vocab)}"
    tokens = np.asarray(cache.arrays["text"])
    assert tokens.shape == (12, 12) and tokens.dtype == np.int32 and (tokens[:, -1] == 0).all()
    from altmodal.data.media.text import decode, load_tokenizer

    tokenizer = load_tokenizer(tmp_path / "cache" / "tokenizer.json")
    assert decode(tokenizer, tokens[0]) == "recipe apple cinnamon crust number 0"
    splits = splits_of(tmp_path / "cache", "food101", "crop=8")
    batch = splits.train.gather(np.arange(len(splits.train)))
    assert batch.inputs["visual"].shape == (len(splits.train), 1, 3, 8, 8)
    assert batch.inputs["text"].dtype == np.float32 or batch.inputs["text"].dtype.is_floating_point
    assert splits.train.kinds["text"].startswith("text:") and len(splits.test) == 3


def test_mvsa_original_layout_latin1_text_missing_image_and_empty_text(tmp_path):
    root = tmp_path / "mvsa"
    rows = {"train": [], "test": []}
    for i, label in enumerate(["positive", "neutral", "negative"] * 3):
        split = "test" if i >= 6 else "train"
        if i != 4:
            write_image(root / "data" / f"{i}.jpg", (20 * i, 0, 0))
        text = "caf\xe9 happy day" if i == 0 else ("" if i == 5 else f"tweet {label} {i}")
        (root / "data" / f"{i}.txt").write_bytes(text.encode("latin-1"))
        rows[split].append((f"{i}.jpg", label))
    write_lists(root / "lists", "mvsa", rows["train"], rows["test"], ["positive", "neutral", "negative"])
    summary = prepare(
        "mvsa", root, tmp_path / "cache", {"lists": str(root / "lists"), "image_size": "8", "max_tokens": "6"}
    )
    problems = {(r["key"], r["modality"]): r["reason"] for r in summary.skipped}
    assert problems[("4", "visual")].startswith("no image file here")
    assert problems[("5", "text")] == "empty text"
    assert len(summary.skipped) == 2 and summary.dropped == []
    cache = open_cache(tmp_path / "cache", "mvsa")
    assert not cache.present["visual"][4] and cache.present["text"][4] and not cache.present["text"][5]
    from altmodal.data.media.text import decode, load_tokenizer

    assert decode(load_tokenizer(tmp_path / "cache" / "tokenizer.json"), cache.arrays["text"][0]).startswith("cafe")


def test_iemocap_sessions_faces_videos_and_a_60_20_20_split(tmp_path):
    pytest.importorskip("av")
    root = tmp_path / "iemo"
    emotions = ["Neutral", "Angry", "Sad", "Happy"]
    lines = []
    for i in range(20):
        utt = f"Ses01{'FM'[i % 2]}_impro01_{'FM'[i % 2]}{i:03d}"
        emotion = emotions[i % 4]
        text = f"words of {emotion.lower()} zz{chr(97 + i) * 2}q"
        lines.append(f"/data/IEMOCAP/wav/{utt}.wav [split|sign] {text} [split|sign] {emotion}")
        write_wav(root / "subaudio" / f"{utt}.wav", seconds=0.3, freq=150 + 20 * i)
        if i % 2:
            write_video(root / "subvideo" / f"{utt}.mp4", seconds=3, fps=3, size=16)
        else:
            for s in range(3):
                write_image(root / "faces" / utt / f"{s:03d}.jpg", (60 * s, 60 * s, 60 * s), (10, 10))
    lines.append("/data/IEMOCAP/wav/Ses01F_impro01_X999.wav [split|sign] so frustrating [split|sign] Frustrated")
    (root / "Session1.txt").write_text("\n".join(lines))
    (root / "stat_iemo.txt").write_text("\n".join(emotions))
    opts = {"bins": "16", "frames": "32", "image_size": "8", "max_tokens": "8", "min_frequency": "1"}
    summary = prepare("iemocap", root, tmp_path / "cache", opts)
    assert summary.num_samples == 20 and summary.splits == {"train": 12, "val": 4, "test": 4}
    assert "1 utterances left out" in summary.notes[0] and not summary.skipped
    cache = open_cache(tmp_path / "cache", "iemocap")
    faces = np.asarray(cache.arrays["visual"][0])  # faces 000, 001, 002 -> the middle one, level 60
    assert faces.shape == (1, 3, 8, 8) and abs(int(faces[0, 0, 4, 4]) - 60) <= 3
    assert set(cache.group.tolist()) == {"Ses01F", "Ses01M"}
    splits = splits_of(tmp_path / "cache", "iemocap")
    assert splits.modalities == ["audio", "visual", "text"]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (12, 4, 4)
    vocab = json.loads((tmp_path / "cache" / "tokenizer.json").read_text())["model"]["vocab"]
    for i, part in enumerate(cache.split.tolist()):  # each line has its own word; only training ones are known
        assert (f"zz{chr(97 + i) * 2}q" in vocab) == (part == "train")


def test_bad_lists_name_the_file_and_line(tmp_path):
    (tmp_path / "stat_cre.txt").write_text("Anger\nSad")
    (tmp_path / "my_train_cre.txt").write_text("a.flv Anger\nb.flv Joy\n")
    (tmp_path / "my_test_cre.txt").write_text("c.flv Sad\n")
    with pytest.raises(DataError, match=r"my_train_cre.txt: line 2: label 'Joy' is not in the class list"):
        listed_rows(tmp_path, "cre", read_classes(tmp_path / "stat_cre.txt"), [])
    (tmp_path / "my_train_cre.txt").write_text("a.flv Anger\nonlyonefield\n")
    with pytest.raises(DataError, match=r"my_train_cre.txt: line 2: 'onlyonefield' is not '<file name> <label>'"):
        listed_rows(tmp_path, "cre", ["Anger", "Sad"], [])
    (tmp_path / "my_train_cre.txt").write_text("c.flv Sad\n")
    with pytest.raises(
        DataError, match=r"my_test_cre.txt: line 1: 'c.flv' is listed again \(first in the train list\)"
    ):
        listed_rows(tmp_path, "cre", ["Anger", "Sad"], [])
    with pytest.raises(DataError, match="prepare cremad: unknown option 'bin'"):
        prepare("cremad", tmp_path, tmp_path / "out", {"bin": "3"})
    with pytest.raises(DataError, match="option frames=0 must be at least 1"):
        Options("x", {"frames": "0"}, ["frames"]).integer("frames", 3)


@pytest.mark.skipif(not (SHARED_DATA / "mla_splits").is_dir(), reason="shared/data/mla_splits is not available")
@pytest.mark.parametrize(
    "code, sizes, classes, last",
    [("cre", (6698, 744), 6, "Sad"), ("food", (62970, 22714), 101, None), ("mvsa", (1555, 519), 3, "negative")],
)
def test_the_published_split_lists_parse(code, sizes, classes, last):
    folder = SHARED_DATA / "mla_splits"
    names = read_classes(folder / f"stat_{code}.txt")
    assert len(names) == classes and (last is None or names[-1] == last)
    rows = listed_rows(folder, code, names, [])
    assert (sum(s == "train" for *_, s in rows), sum(s == "test" for *_, s in rows)) == sizes
    if code == "cre":
        assert rows[0] == ("1085_IWL_SAD_XX.flv", "Sad", "train") and {r[0][:4] for r in rows} >= {"1001", "1091"}
