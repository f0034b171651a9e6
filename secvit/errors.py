"""User-facing errors.

Anything the user can fix (a wrong path, an unknown model, a bad parameter) raises
:class:`SecvitError` with a one-line message that says what to fix. The CLI prints
that line and exits with status 2 instead of showing a traceback.
"""


class SecvitError(Exception):
    """An error caused by the user's input, with a one-line message saying what to fix."""


def refused_pickle(source: str, path: str | None) -> SecvitError:
    """The error for a weights file (``path``, read as ``source``) whose pickle asks weights-only loading
    for more than tensors and plain containers, naming what it asked for (``builtins.getattr``, a class)."""
    names: list[str] = []
    if path is not None:
        import torch

        try:
            names = list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        except Exception:  # not a zip archive written by torch.save: the loader's own message applies
            names = []
    asked = ", ".join(names[:3]) or "objects other than tensors"
    return SecvitError(
        f"{source} refused: its pickle asks for {asked}, which safe (weights-only) loading does not run; "
        "use a file of tensors (a state dict or safetensors) from a source you trust"
    )
