"""Errors a user can act on.

Every error raised for bad input or a bad request is a `ScdrugmapError` whose
message is one line naming the thing at fault, the problem and the fix, so the
CLI and the HTTP service can show it as it is instead of a traceback.
"""


class ScdrugmapError(Exception):
    """Base class: the message is shown to the user verbatim."""


class InputError(ScdrugmapError):
    """A file or option given by the user cannot be used as it is."""


class StoreError(ScdrugmapError):
    """The store does not hold what the request needs (or it is damaged)."""


class TrainingError(ScdrugmapError):
    """Training cannot go on as configured (for example, an adapter gets no gradient)."""
