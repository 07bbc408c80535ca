"""Store backends: one module per kind of store, none importing another.

- :mod:`~callboard.registry.backends.memory`: the in-process default (tests, demo, one node);
- :mod:`~callboard.registry.backends.redis`: Redis/Valkey shared by many nodes, with
  :mod:`~callboard.registry.backends.redis_index` (the Lua scripts in ``lua/``) as its
  accelerated :class:`~callboard.registry.index.SessionIndex`.

:func:`callboard.registry.store_from_url` picks one by URL scheme.
"""
