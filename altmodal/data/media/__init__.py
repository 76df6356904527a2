"""Raw media to arrays: audio files to log-mel filterbanks, images and video frames to uint8
pixels, texts to token ids; and the batch-level image transforms applied at training time.

Every third-party decoder (soundfile, kaldi-native-fbank, Pillow, PyAV, tokenizers) is imported
inside the function that needs it, so ``import altmodal`` works without them; a missing one
raises :class:`MissingExtra`, which names the extra to install. Unreadable or malformed media
raise :class:`MediaError`, whose message names the file and the reason.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from altmodal.data.features import DataError

EXTRA_HINT = 'pip install "altmodal[media]"'


class MissingExtra(ImportError):
    """An optional dependency of the media pipelines is not installed."""


class MediaError(DataError):
    """A media file that cannot be used; the message is ``"<file>: <reason>"``.

    Attributes:
        path: the file (or folder) concerned, as text.
        reason: why it cannot be used.
    """

    def __init__(self, path: object, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def require(module: str, purpose: str) -> ModuleType:
    """Import an optional dependency, or raise :class:`MissingExtra` naming the extra.

    Args:
        module: the module to import, e.g. ``"soundfile"``.
        purpose: what it is needed for, for the message (e.g. ``"reading audio files"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtra(f"{purpose} needs the optional package {module!r}: {EXTRA_HINT}") from err


__all__ = ["EXTRA_HINT", "MediaError", "MissingExtra", "require"]
