"""One module per CLI command; :mod:`evoprune.cli` assembles them into the ``evoprune`` group."""
