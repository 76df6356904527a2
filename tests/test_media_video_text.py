"""Video frames at 1 fps (PyAV), frame folders, and WordPiece token ids."""

import numpy as np
import pytest

from altmodal.data.media import MediaError
from altmodal.data.media.video import folder_frames, frame_indices, video_frames
from tests.media_fakes import write_image, write_video


def test_frame_indices():
    assert frame_indices(9, 3) == [0, 3, 6]
    assert frame_indices(4, 3) == [0, 1, 2]
    assert frame_indices(2, 3) == [0, 0, 1]
    assert frame_indices(1, 3) == [0, 0, 0]
    assert frame_indices(7, 1, "middle") == [3]
    with pytest.raises(ValueError, match="no frames"):
        frame_indices(0, 3)


@pytest.mark.parametrize("name, codec", [("clip.mp4", "mpeg4"), ("clip.flv", "flv")])
def test_video_keeps_one_frame_per_second_then_three(tmp_path, name, codec):
    pytest.importorskip("av")
    levels = write_video(tmp_path / name, seconds=6, fps=5, size=16, codec=codec)
    frames = video_frames(tmp_path / name, 8)
    assert frames.shape == (3, 3, 8, 8) and frames.dtype == np.uint8
    # 6 one-per-second frames -> seconds 0, 2, 4
    np.testing.assert_allclose(frames[:, :, 4, 4].mean(axis=1), [levels[0], levels[2], levels[4]], atol=4)
    middle = video_frames(tmp_path / name, 8, count=1, fps=None, pick="middle", channels=1)
    assert middle.shape == (1, 1, 8, 8) and abs(int(middle[0, 0, 4, 4]) - levels[3]) <= 4  # frame 15 of 30


def test_frame_folder_is_read_in_name_order(tmp_path):
    for i, value in enumerate([10, 60, 110, 160, 210, 250]):
        write_image(tmp_path / "clip" / f"{i:05d}.jpg", (value, value, value), (12, 12))
    (tmp_path / "clip" / "notes.txt").write_text("not a frame")
    frames = folder_frames(tmp_path / "clip", 6)
    np.testing.assert_allclose(frames[:, 0, 3, 3], [10, 110, 210], atol=3)


def test_bad_video_and_empty_folder_name_the_path(tmp_path):
    pytest.importorskip("av")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 then garbage" * 4)
    with pytest.raises(MediaError, match=r"bad.mp4: cannot decode video"):
        video_frames(bad, 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MediaError, match="empty: the frame folder holds no images"):
        folder_frames(tmp_path / "empty", 8)
    with pytest.raises(MediaError, match=r"nope.flv: no such video file"):
        video_frames(tmp_path / "nope.flv", 8)


TEXTS = ["the cat sat on the mat", "a dog sat on a log", "the cat and the dog", "cats and dogs sat"] * 5


def test_wordpiece_round_trip_padding_and_truncation(tmp_path):
    pytest.importorskip("tokenizers")
    from altmodal.data.media.text import decode, encode, load_tokenizer, train_wordpiece, vocab_size

    tokenizer = train_wordpiece(TEXTS, vocab_size=200, min_frequency=1)
    assert tokenizer.id_to_token(0) == "[PAD]" and vocab_size(tokenizer) <= 200
    ids = encode(tokenizer, ["The Cat sat on the MAT", "dog"], max_tokens=8)
    assert ids.shape == (2, 8) and ids.dtype == np.int32
    assert decode(tokenizer, ids[0]) == "the cat sat on the mat"
    assert (ids[1, 1:] == 0).all() and ids[1, 0] != 0
    assert (encode(tokenizer, ["the cat sat on the mat"], max_tokens=3)[0] == ids[0, :3]).all()
    unknown = encode(tokenizer, ["zebra"], max_tokens=4)[0]
    assert tokenizer.id_to_token(int(unknown[0])) == "[UNK]"
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    assert (encode(load_tokenizer(path), ["the cat sat on the mat"], 8) == ids[:1]).all()


def test_a_tokenizer_without_padding_at_id_0_is_refused(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({"hello": 0, "[UNK]": 1}, unk_token="[UNK]"))
    path = tmp_path / "tok.json"
    tok.save(str(path))
    from altmodal.data.media.text import load_tokenizer

    with pytest.raises(MediaError, match=r"tok.json: token id 0 is 'hello', but padding uses id 0"):
        load_tokenizer(path)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(MediaError, match=r"broken.json: not a readable tokenizer.json"):
        load_tokenizer(tmp_path / "broken.json")
