"""Reading published pickled dictionaries without executing code.

Geneformer ships its vocabularies as pickles. A plain `pickle.load` would run
whatever a tampered file asks for; this unpickler admits only the plain
containers, strings and numbers such dictionaries are made of, and refuses
every other global with a clear error.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from scdrugmap.errors import InputError

_ALLOWED = {
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "str"),
    ("builtins", "int"),
    ("builtins", "float"),
    ("builtins", "bool"),
    ("collections", "OrderedDict"),
}


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def load_plain_pickle(path: Path):
    """Load a pickle that may hold only plain containers, strings and numbers."""
    try:
        with Path(path).open("rb") as handle:
            return _PlainUnpickler(handle).load()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise InputError(
            f"{path}: not a plain pickled dictionary ({error}); use the file as published"
        ) from error
