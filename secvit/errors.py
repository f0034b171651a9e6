"""User-facing errors.

Anything the user can fix (a wrong path, an unknown model, a bad parameter) raises
:class:`SecvitError` with a one-line message that says what to fix. The CLI prints
that line and exits with status 2 instead of showing a traceback.
"""


class SecvitError(Exception):
    """An error caused by the user's input, with a one-line message saying what to fix."""
