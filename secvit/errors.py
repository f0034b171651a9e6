"""User-facing errors.

Anything the user can fix (a wrong path, an unknown model, a bad parameter) raises
:class:`SecvitError` with a one-line message that says what to fix. The CLI prints
that line and exits with status 2 instead of showing a traceback.
"""


class SecvitError(Exception):
    """An error caused by the user's input, with a one-line message saying what to fix."""


def unsafe_globals(path: str | None) -> list[str]:
    """What the pickle of the ``torch.save`` file ``path`` asks for beyond weights-only loading's defaults
    (``builtins.getattr``, classes); empty for a file of tensors and plain containers, or not a zip archive."""
    if path is None:
        return []
    import torch

    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # not a zip archive written by torch.save: the loader's own message applies
        return []


def refused_pickle(source: str, names: list[str]) -> SecvitError:
    """The error for a weights file (read as ``source``) whose pickle asks for ``names``, which
    weights-only loading does not build."""
    asked = ", ".join(names[:3]) or "objects other than tensors"
    return SecvitError(
        f"{source} refused: its pickle asks for {asked}, which safe (weights-only) loading does not run; "
        "use a file of tensors (a state dict or safetensors) from a source you trust"
    )
