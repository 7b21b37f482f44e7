"""TorchEasyRec's ``tzrec.tools`` counterparts (feature selection, fg.json), as ``recforge``
subcommands and as ``python -m recforge.tools.X`` with TorchEasyRec's flag names."""
