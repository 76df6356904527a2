"""Texts to fixed-length token ids with the ``tokenizers`` library (never downloads anything).

The paper's reference code tokenises with BERT's uncased WordPiece vocabulary, without special
tokens, padded or truncated to 256 tokens. Without network access the vocabulary is either
trained here (BERT-style normalisation and pre-tokenisation, a WordPiece model) on the TRAINING
texts only, or read from a ``tokenizer.json`` the user supplies (e.g. BERT's own, saved locally).
Id 0 is the padding id: trained vocabularies put ``[PAD]`` first, and a supplied tokenizer must
have its padding token at id 0 (BERT's does).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from altmodal.data.media import MediaError, require

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD_TOKENS = ("[PAD]", "<pad>", "<PAD>")
PAD_ID = 0


def train_wordpiece(
    texts: Iterable[str], vocab_size: int = 30522, min_frequency: int = 2, lowercase: bool = True
) -> Any:
    """A WordPiece tokenizer (``tokenizers.Tokenizer``) trained on ``texts``.

    Args:
        texts: the training texts (never validation or test texts of the evaluation).
        vocab_size: the largest vocabulary to learn (BERT's size by default; small corpora stop
            earlier).
        min_frequency: a merge must occur this often to enter the vocabulary.
        lowercase: lowercase and strip accents (BERT uncased).
    """
    tokenizers = require("tokenizers", "tokenising text")
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = tokenizers.normalizers.BertNormalizer(lowercase=lowercase)
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = tokenizers.decoders.WordPiece()
    trainer = tokenizers.trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    return tokenizer


def load_tokenizer(path: str | Path) -> Any:
    """A tokenizer saved as ``tokenizer.json``; its padding token must have id 0.

    Raises:
        MediaError: the file is missing or unreadable, or id 0 is not a padding token.
    """
    tokenizers = require("tokenizers", "tokenising text")
    path = Path(path)
    if not path.is_file():
        raise MediaError(path, "no such tokenizer file")
    try:
        tokenizer = tokenizers.Tokenizer.from_file(str(path))
    except Exception as err:  # the Rust side raises plain Exception subclasses
        raise MediaError(path, f"not a readable tokenizer.json ({err})") from err
    first = tokenizer.id_to_token(PAD_ID)
    if first not in PAD_TOKENS:
        raise MediaError(
            path,
            f"token id 0 is {first!r}, but padding uses id 0; use a vocabulary whose padding token "
            f"({' or '.join(PAD_TOKENS)}) has id 0",
        )
    return tokenizer


def encode(tokenizer: Any, texts: Sequence[str], max_tokens: int = 256) -> np.ndarray:
    """(len(texts), max_tokens) int32 token ids without special tokens, cut or padded with 0."""
    out = np.zeros((len(texts), max_tokens), dtype=np.int32)
    if not texts:
        return out
    tokenizer.no_padding()
    tokenizer.no_truncation()
    for row, encoding in enumerate(tokenizer.encode_batch(list(texts), add_special_tokens=False)):
        ids = encoding.ids[:max_tokens]
        out[row, : len(ids)] = ids
    return out


def decode(tokenizer: Any, ids: Sequence[int] | np.ndarray) -> str:
    """The text of one row of token ids (padding dropped)."""
    return str(tokenizer.decode([int(i) for i in ids if int(i) != PAD_ID]))


def vocab_size(tokenizer: Any) -> int:
    """Number of ids the tokenizer can emit (the text encoder's embedding rows)."""
    return int(tokenizer.get_vocab_size(with_added_tokens=True))
