"""Subcommands beside the four pipelines (``recforge feature-selection``, ...)."""
