"""Subcommands of the ``semcache`` CLI (see :mod:`semcache.cli`)."""
