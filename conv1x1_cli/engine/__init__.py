"""The in-process engine: banks from any source checked into layers (``layers``, ``banks``), packed
into stacks and driven over pixel chunks (``stack``), from and to arrays in memory (``arrays``) or
.npy files and streams (``streaming``), with a report of each run (``report``).

Imports only downward: the kernel (lazily), ``sources`` and ``costs``; never the CLI, the API or the
cluster. Nothing is imported here, so that importing a submodule costs only what it needs.
"""
