"""Reading published pickled dictionaries without executing code.

Geneformer ships its vocabularies as pickles. A plain `pickle.load` would run
whatever a tampered file asks for; this unpickler admits only the plain
containers, strings and numbers such dictionaries are made of (numpy numbers
included: the published files hold int16 tokens and float64 medians), and
refuses every other global with a clear error.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from scdrugmap.errors import InputError

# Rebuilding a numpy scalar needs exactly these callables; both only turn a
# dtype and raw bytes into a number.
_NUMPY_SCALAR = np.float64(0).__reduce__()[0]
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "scalar"): _NUMPY_SCALAR,
    ("numpy._core.multiarray", "scalar"): _NUMPY_SCALAR,
    ("numpy", "dtype"): np.dtype,
}

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
        if (module, name) in _NUMPY_GLOBALS:
            return _NUMPY_GLOBALS[(module, name)]
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
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise InputError(
            f"{path}: not a plain pickled dictionary ({error}); use the file as published"
        ) from error


def load_plain_dictionary(path: Path) -> dict:
    """A published pickled dictionary (Geneformer's vocabularies, symbol-to-Ensembl maps),
    its numpy numbers turned into plain ones."""
    loaded = load_plain_pickle(path)
    if not isinstance(loaded, dict):
        raise InputError(f"{path}: holds a {type(loaded).__name__}, not a dictionary")
    return {str(k): v.item() if isinstance(v, np.generic) else v for k, v in loaded.items()}
