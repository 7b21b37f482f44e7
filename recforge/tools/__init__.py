"""TorchEasyRec's tools: ``recforge feature-selection``, ``recforge create-fg-json``, ...

Each also runs as ``python -m recforge.tools.X`` with TorchEasyRec's flag names.
"""
