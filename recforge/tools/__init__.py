"""TorchEasyRec's ``tzrec.tools`` scripts with their flag names: ``python -m recforge.tools.X``."""
