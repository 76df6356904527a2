"""Encoders: one per modality, each mapping a modality's input to a (B, dim) feature.

Builder functions, no registry magic: :func:`build_encoder` picks the encoder for a modality from
its kind, a string the dataset sets on ``MultimodalDataset.kinds``:

- ``mlp``: feature vectors (any trailing shape is flattened); the default;
- ``ple``: feature vectors through piecewise-linear encodings of each feature, then the MLP
  (:class:`~altmodal.encoders.numeric.PiecewiseLinearEncoder`; its bin edges are fitted on the
  training split before training);
- ``resnet18-audio``: (T, F) filterbanks, :class:`~altmodal.encoders.resnet.AudioResNet`;
- ``resnet18-visual``: (T, C, H, W) frames, :class:`~altmodal.encoders.resnet.VisualResNet`;
- ``text:<vocab size>``: (L,) token ids, :class:`~altmodal.encoders.text.TextEncoder`.

``--encoder MODALITY=KIND`` overrides the kind a dataset names (e.g. a (N, 28, 28) feature-file
array through ``resnet18-visual``).

Your own encoder (from Python, ``train_run(..., encoders={modality: module})``) follows one
contract: an ``nn.Module`` whose ``forward`` maps a modality's batch (B, *sample shape), float32,
to features (B, d), where d is the head's width (``dim``). Its width is read from an ``out_dim``
attribute if it has one and checked by one forward pass on two training samples before the
first epoch (:func:`check_encoder`); a mismatch is an error naming the modality and both widths.

Local pretrained weights load per modality (``--weights audio=PATH``, strict): the file holds a
state dict of the encoder, of its backbone alone (e.g. a ResNet18 without its ``fc``), or a
saved altmodal model (``model.safetensors``/checkpoint: the ``encoders.<modality>.`` entries are used).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from altmodal.config import option, require
from altmodal.encoders.mlp import MLPEncoder
from altmodal.encoders.numeric import BINS, PiecewiseLinearEncoder
from altmodal.encoders.resnet import AudioResNet, VisualResNet, channels_last
from altmodal.encoders.text import TextEncoder

KINDS = ("mlp", "ple", "resnet18-audio", "resnet18-visual", "text:<vocab size>")
FEATURE_KINDS = ("mlp", "ple")
"""The kinds that read vectors of features."""

PLE_WIDTH = 256
"""``--feature-encoder auto`` encodes vectors of at most this many features piecewise-linearly
(``ple``); wider ones (bags of words, graph rows: mostly zeros, where quantile bins collapse and
the first layer would grow by the bins) go to the plain MLP."""


@dataclass(frozen=True)
class EncoderConfig:
    """Encoder sizes. Every encoder outputs ``dim`` features, the width the heads read (d)."""

    dim: int = option(128, "feature width d shared by all modalities (the head's input)")
    hidden: tuple[int, ...] = option((256,), "hidden layer widths of the MLP encoders")
    dropout: float = option(0.0, "dropout in the MLP encoders")
    feature_encoder: Literal["auto", "mlp", "ple"] = option(
        "mlp",
        "encoder of the feature modalities no --encoder names: mlp, ple (piecewise-linear encodings of each "
        f"feature, then the MLP), or auto: ple for vectors of at most {PLE_WIDTH} features, mlp for wider ones",
    )
    ple_bins: int = option(BINS, "bins per feature of the ple encoders (piecewise-linear encodings)")
    resnet_width: int = option(64, "first-stage width of the ResNet18 encoders (64 = paper; 8-16 for CPU runs)")
    text_width: int = option(128, "model width of the text encoder")
    text_layers: int = option(2, "transformer layers of the text encoder")
    text_heads: int = option(4, "attention heads of the text encoder")
    kinds: tuple[str, ...] = option(
        (),
        "the encoder kind of one modality as modality=kind, e.g. image=resnet18-visual (repeat the flag for more)",
        flag="--encoder",
        repeat=True,
        metavar="MODALITY=KIND",
    )
    absent: Literal["zero-inputs", "zero-features"] = option(
        "zero-inputs",
        "what an absent modality feeds the model: its encoder's output for a zero input (the paper's "
        "code; the default, fairer to fusion-head baselines) or zero features (the encoder skipped)",
    )
    weights: tuple[str, ...] = option(
        (),
        "local pretrained weights of one modality's encoder as modality=path (repeat the flag for more)",
        flag="--weights",
        repeat=True,
        metavar="MODALITY=PATH",
    )

    def __post_init__(self) -> None:
        require(self.dim >= 1, "dim", self.dim, "at least 1")
        require(all(h >= 1 for h in self.hidden), "hidden", self.hidden, "widths of at least 1")
        require(0 <= self.dropout < 1, "dropout", self.dropout, "in [0, 1)")
        require(self.ple_bins >= 1, "ple_bins", self.ple_bins, "at least 1")
        require(self.resnet_width >= 1, "resnet_width", self.resnet_width, "at least 1")
        require(self.text_layers >= 1, "text_layers", self.text_layers, "at least 1")
        require(self.text_heads >= 1, "text_heads", self.text_heads, "at least 1")
        require(
            self.text_width >= 1 and self.text_width % self.text_heads == 0,
            "text_width",
            self.text_width,
            f"a positive multiple of --text-heads ({self.text_heads})",
        )


def build_encoder(kind: str, in_shape: Sequence[int], config: EncoderConfig, modality: str | None = None) -> nn.Module:
    """The encoder of one modality; it has an ``out_dim`` attribute equal to ``config.dim``.

    Args:
        kind: the encoder kind (see the module docstring).
        in_shape: the shape of one sample.
        config: sizes and weights.
        modality: the modality's name; with it, weights named for it in ``config.weights`` load.

    Raises:
        ValueError: an unknown kind, a shape the kind cannot take, or weights that do not fit.
    """
    with torch.device("meta"):  # sizes only, nothing allocated
        check_size(_build(kind, in_shape, config), kind, config, modality)
    encoder = _build(kind, in_shape, config)
    path = weights_by_modality(config.weights).get(modality or "")
    if path is not None:
        load_weights(encoder, path, str(modality), kind)
    return encoder


def _build(kind: str, in_shape: Sequence[int], config: EncoderConfig) -> nn.Module:
    if kind == "mlp":
        return MLPEncoder(in_shape, config.hidden, config.dim, config.dropout)
    if kind == "ple":
        return PiecewiseLinearEncoder(in_shape, config.hidden, config.dim, config.dropout, config.ple_bins)
    if kind == "resnet18-audio":
        return AudioResNet(in_shape, config.dim, config.resnet_width)
    if kind == "resnet18-visual":
        return VisualResNet(in_shape, config.dim, config.resnet_width)
    if kind.startswith("text:"):
        vocab = kind.partition(":")[2]
        if not vocab.isdigit() or int(vocab) < 1:
            raise ValueError(f"encoder kind {kind!r}: the vocabulary size after 'text:' must be a positive integer")
        return TextEncoder(in_shape, int(vocab), config.dim, config.text_width, config.text_layers, config.text_heads)
    raise ValueError(f"unknown encoder kind {kind!r}; kinds: {', '.join(KINDS)}")


TRAINING_COPIES = 4
"""Copies of the parameters training holds: the weights, their gradients, the optimizer's state
(SGD's momentum) and the best epoch's copy."""


def check_size(encoder: nn.Module, kind: str, config: EncoderConfig, modality: str | None = None) -> None:
    """Raise before an encoder is built whose training would need more memory than this process
    may use (``encoder`` built on the meta device, which allocates nothing).

    Raises:
        ValueError: the message names the modality, the parameter count and the size settings.
    """
    count = sum(p.numel() for p in encoder.parameters()) + sum(b.numel() for b in encoder.buffers())
    needed = count * 4 * TRAINING_COPIES  # float32
    limit = memory_limit()
    if needed <= limit:
        return
    if kind in FEATURE_KINDS:
        settings = f"--hidden {','.join(map(str, config.hidden))} --dim {config.dim}"
    elif kind.startswith("resnet18"):
        settings = f"--resnet-width {config.resnet_width} --dim {config.dim}"
    else:
        settings = f"--text-width {config.text_width} --text-layers {config.text_layers} (vocabulary {kind[5:]})"
    raise ValueError(
        f"encoder of modality {modality or '?'!r} ({kind}) would hold {count:.2g} parameters ({settings}): "
        f"{needed / 2**30:.3g} GiB to train, more than the {limit / 2**30:.3g} GiB of memory here; "
        "choose smaller widths"
    )


def memory_limit() -> int:
    """The bytes of memory this process may use: the machine's, or less where an address-space
    limit (``ulimit -v``) or a control group caps it."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        pass
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY and soft > 0:
            limits.append(soft)
    except (ImportError, OSError, ValueError):
        pass
    for cgroup in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(cgroup).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))
    return min(limits) if limits else 2**62


def weights_by_modality(entries: Sequence[str]) -> dict[str, Path]:
    """``modality=path`` entries as a dict; raises ValueError naming a malformed entry."""
    return {m: Path(p) for m, p in by_modality(entries, "--weights", "path").items()}


def by_modality(entries: Sequence[str], flag: str, what: str) -> dict[str, str]:
    """``modality=value`` entries as a dict; raises ValueError naming a malformed entry."""
    out: dict[str, str] = {}
    for entry in entries:
        modality, sep, value = entry.partition("=")
        if not sep or not modality.strip() or not value.strip():
            raise ValueError(f"{flag} {entry!r} is not of the form modality={what}")
        out[modality.strip()] = value.strip()
    return out


def encoder_kinds(
    defaults: Mapping[str, str], shapes: Mapping[str, Sequence[int]], config: EncoderConfig
) -> dict[str, str]:
    """modality -> encoder kind: ``--encoder`` entries over the dataset's kinds; a modality that
    neither names gets the kind ``--feature-encoder`` gives its shape (:func:`feature_kind`)."""
    chosen = by_modality(config.kinds, "--encoder", "kind")
    for flag, named in (("--encoder", chosen), ("--weights", weights_by_modality(config.weights))):
        unknown = [m for m in named if m not in shapes]
        if unknown:
            raise ValueError(f"{flag} names modality {unknown[0]!r}; the modalities are {', '.join(shapes)}")
    kinds = {m: defaults.get(m, feature_kind(config.feature_encoder, shape)) for m, shape in shapes.items()}
    return {**kinds, **chosen}


def feature_kind(setting: str, shape: Sequence[int]) -> str:
    """The encoder kind of a feature modality of sample ``shape`` under ``--feature-encoder``."""
    if setting != "auto":
        return setting
    return "ple" if len(shape) == 1 and shape[0] <= PLE_WIDTH else "mlp"


@torch.no_grad()
def check_encoder(modality: str, encoder: nn.Module, sample: torch.Tensor, dim: int) -> nn.Module:
    """Check a user's encoder by one forward pass on ``sample`` (n, ...) before training.

    The output must be (n, ``dim``), and an ``out_dim`` attribute, if the encoder has one, must
    equal ``dim``; without one it is set to ``dim``. The encoder's training mode is restored.

    Raises:
        ValueError: the forward pass fails or gives another shape; the message names the
            modality, the encoder class and what to change.
    """
    name = type(encoder).__name__
    if not isinstance(encoder, nn.Module):
        raise ValueError(f"encoder of modality {modality!r} is a {name}, not a torch.nn.Module")
    declared = getattr(encoder, "out_dim", None)
    if declared is not None and int(declared) != dim:
        raise ValueError(
            f"encoder of modality {modality!r} ({name}) declares out_dim={declared}, but the head reads "
            f"{dim} features (dim={dim}); set dim={declared} or make the encoder output {dim}"
        )
    was_training = encoder.training
    encoder.eval()
    try:
        out = encoder(sample)
    except Exception as err:  # any failure of user code is reported with the input it got
        raise ValueError(
            f"encoder of modality {modality!r} ({name}) fails on a batch of shape {tuple(sample.shape)}: {err}"
        ) from err
    finally:
        encoder.train(was_training)
    expected = (len(sample), dim)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"encoder of modality {modality!r} ({name}) maps a batch of shape {tuple(sample.shape)} to {got}; "
            f"it must give {expected}: (batch, dim) with dim={dim}, the head's width (set dim or end the "
            f"encoder with a linear layer to {dim} features)"
        )
    if declared is None:
        encoder.out_dim = dim  # type: ignore[assignment]
    return encoder


def _read_tensors(path: Path) -> Any:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def load_weights(encoder: nn.Module, path: str | Path, modality: str, kind: str = "") -> None:
    """Load a state dict strictly into ``encoder`` (or its ``backbone``); see the module docstring.

    Raises:
        ValueError: the file is missing or unreadable, or its entries do not match the encoder
            (the message names the file and the first missing, unexpected or mis-shaped entries).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such weights file (given for modality {modality!r})")
    try:
        state: Any = _read_tensors(path)
    except Exception as err:  # torch raises many types for a bad file
        raise ValueError(f"{path}: not a readable torch weights file ({err})") from err
    for key in ("model", "state_dict"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: holds no state dict of tensors")
    prefix = f"encoders.{modality}."
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    target = encoder
    backbone = getattr(encoder, "backbone", None)
    if isinstance(backbone, nn.Module) and not any(k.startswith(("backbone.", "proj.")) for k in state):
        target = backbone
    expected = target.state_dict()
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    problems += [
        f"{k} has shape {tuple(state[k].shape)}, the encoder needs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        raise ValueError(
            f"{path}: weights do not fit the {modality!r} encoder ({kind or type(encoder).__name__}, "
            f"{'backbone' if target is not encoder else 'whole encoder'}): {shown}"
        )
    target.load_state_dict(dict(state), strict=True)


__all__ = [
    "KINDS",
    "EncoderConfig",
    "build_encoder",
    "channels_last",
    "check_encoder",
    "check_size",
    "encoder_kinds",
    "load_weights",
    "memory_limit",
    "weights_by_modality",
]
