"""The papers' results tables, reproduced with DVC experiments (``docs/results.md``).

``python -m experiments.run`` queues one ``dvc exp run`` per (set, seed) over params overrides and runs the
queue; ``python -m experiments.tables`` reads the finished experiments back (``dvc exp show`` for which ran,
``dvc.api`` for their cached member outputs) and rebuilds ``docs/results.md``. The sets are in
:mod:`experiments.sets`, the arithmetic in :mod:`experiments.tables`.
"""
