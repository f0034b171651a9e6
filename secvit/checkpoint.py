"""Checkpoint files: atomic writes, safe loading with clear errors, and weight conversion."""

from __future__ import annotations

import pickle
import struct
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from secvit.atomic import atomic_write
from secvit.errors import SecvitError, refused_pickle, unsafe_globals


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same directory, then rename: never a torn file."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str]) -> None:
    """Write a safetensors file atomically."""
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


#: What loading raises on bytes that are not a complete checkpoint of the format they start like:
#: torch's RuntimeError (zip archive and magic-number checks) and AssertionError (legacy loader,
#: missing storage key), safetensors' SafetensorError, and what Python's pickle machine raises on
#: a malformed stream (the pickle docs name UnpicklingError, AttributeError, EOFError, ImportError
#: and IndexError; a malformed stream also gives KeyError for a missing memo entry, ValueError,
#: TypeError, UnicodeDecodeError, and struct.error or OverflowError for bad lengths). The file's
#: bytes are the only input of these calls and the message keeps the exception's text.
#: MemoryError is left alone: it may be a real shortage.
_MALFORMED = (
    SafetensorError,
    RuntimeError,
    AssertionError,
    pickle.UnpicklingError,
    EOFError,
    AttributeError,
    ImportError,
    IndexError,
    KeyError,
    ValueError,
    TypeError,
    UnicodeDecodeError,
    struct.error,
    OverflowError,
)
_PICKLE_PROTOCOLS = (2, 3, 4, 5)  # torch.save writes protocol 2; legacy files may use a later one


def _not_torch_file(path: Path) -> str | None:
    """Why ``path`` cannot be a ``torch.save`` file (a zip archive holding ``<name>/data.pkl``, or a
    legacy binary pickle), or None when it looks like one. Read before ``torch.load``, so that text or
    random bytes never reach the unpickler."""
    with path.open("rb") as f:
        head = f.read(4)
    if not head:
        return "empty file"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile as e:
            return f"a truncated or damaged zip archive: {e}"
        if not any(name.endswith("/data.pkl") or name == "data.pkl" for name in names):
            return "a zip archive without data.pkl, not written by torch.save"
        return None
    if head[0] == 0x80 and len(head) > 1 and head[1] in _PICKLE_PROTOCOLS:
        return None
    return f"neither a zip archive nor a binary pickle; it starts with {head!r}"


def load_file_checked(path: str | Path) -> dict[str, Any]:
    """Load a ``.pth``/``.pt``/``.safetensors`` checkpoint or raise a one-line :class:`SecvitError`.

    Every file loads with torch's ``weights_only`` unpickler, and this module allows it nothing
    beyond its defaults (tensors, numbers, strings and plain containers): released weights from a
    file-sharing link, a user's ``--weights`` and our own checkpoints alike (ours hold only such
    objects, optimizer state included). A pickle that would build anything else (call ``getattr``,
    import a class) is refused with a one-line error naming what it asked for; so are empty, text,
    random, truncated or foreign files (a zip archive that torch did not write, a pickle of
    something else) and unreadable ones.
    """
    path = Path(path)
    if path.is_dir():
        raise SecvitError(f"checkpoint {path} is a directory, not a file")
    if not path.is_file():
        raise SecvitError(f"checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            obj = load_file(path)
        else:
            problem = _not_torch_file(path)
            if problem is not None:
                raise SecvitError(f"checkpoint {path} is corrupt or not a PyTorch/safetensors file ({problem})")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:
        raise SecvitError(f"cannot read checkpoint {path}: {e.strerror or e}") from e
    except pickle.UnpicklingError as e:
        names = unsafe_globals(str(path))
        if not names:  # not a refusal: a pickle of something else, or damaged
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise SecvitError(f"checkpoint {path} is corrupt or not a PyTorch/safetensors file ({first[:120]})") from e
        raise refused_pickle(f"checkpoint {path}", names) from None
    except _MALFORMED as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SecvitError(f"checkpoint {path} is corrupt or not a PyTorch/safetensors file ({first[:120]})") from e
    if not isinstance(obj, dict):
        raise SecvitError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict of tensors")
    return obj


def pick_state_dict(checkpoint: dict[str, Any], ema: bool, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The raw (``model``) or EMA (``model_ema``) weights of a checkpoint, or the bare state dict."""
    key = "model_ema" if ema else "model"
    if key in checkpoint and checkpoint[key] is None and "history" in checkpoint:
        raise SecvitError(f"{source} is the record of a finished run and holds no weights; use its best.pth")
    if key in checkpoint:
        state = checkpoint[key]
    elif ema:
        raise SecvitError(f"{source} has no EMA weights ('model_ema'); drop --ema to use the raw weights")
    elif all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        state = checkpoint
    else:
        raise SecvitError(f"{source} has neither 'model' weights nor a bare state dict (keys: {', '.join(list(checkpoint)[:6])})")
    if not isinstance(state, dict):
        raise SecvitError(f"{source}['{key}'] is not a state dict")
    return state


def _checkpoint_filter(model: torch.nn.Module) -> Callable[[dict, torch.nn.Module], dict]:
    """The ``checkpoint_filter_fn`` of the model's family (timm's convention: one per model file)."""
    module = sys.modules.get(type(model).__module__)
    return getattr(module, "checkpoint_filter_fn", lambda state, _model: state)


def _load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> torch.nn.Module:
    try:
        model.load_state_dict(_checkpoint_filter(model)(state, model), strict=True)
    except RuntimeError as e:  # families whose filter does not check keys itself
        detail = " ".join(str(e).split())
        raise SecvitError(f"{source} does not fit {type(model).__name__}: {detail[:300]}") from None
    return model


def load_weights(model: torch.nn.Module, path: str | Path, ema: bool = False) -> torch.nn.Module:
    """Load released or own weights into a registered model strictly, through its family's checkpoint filter."""
    checkpoint = load_file_checked(path)
    return _load_state(model, pick_state_dict(checkpoint, ema, source=str(path)), f"checkpoint {path}")


def classifier_classes(state: dict[str, torch.Tensor], model_name: str) -> int | None:
    """Number of classes of the classifier in ``state`` (our layout or a released one), None if it has none."""
    import timm

    classifier = getattr(timm.models.get_pretrained_cfg(model_name), "classifier", None) or "head"
    keys = {f"{classifier}.weight", "head.weight", "head.fc.weight"}
    for name, value in state.items():
        if name.removeprefix("module.") in keys and isinstance(value, torch.Tensor):
            return int(value.shape[0])
    return None


def create_with_weights(model_name: str, path: str | Path, ema: bool = False, **kwargs: Any) -> torch.nn.Module:
    """The registered model ``model_name`` holding the weights of ``path`` (released or ours), loaded strictly.

    The classifier is sized from the file, so a checkpoint trained on any number of classes loads.
    """
    from secvit.models.registry import create

    state = pick_state_dict(load_file_checked(path), ema, source=str(path))
    classes = classifier_classes(state, model_name)
    if classes is not None:
        kwargs["num_classes"] = classes
    return _load_state(create(model_name, **kwargs), state, f"checkpoint {path}")


def convert(src: str | Path, dst: str | Path, model_name: str, ema: bool = False) -> int:
    """Convert a released SecViT checkpoint into a safetensors file of our layout. Returns the tensor count."""
    from secvit.models.registry import create

    model = create(model_name)
    load_weights(model, src, ema=ema)
    state = {k: v for k, v in model.state_dict().items()}
    atomic_save_safetensors(state, dst, metadata={"model": model_name, "source": Path(src).name, "ema": str(ema)})
    return len(state)
