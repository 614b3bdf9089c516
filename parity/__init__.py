"""Parity with the authors' code: one script per model, `python -m parity.<model>
--reference PATH` (see parity/README.md)."""
