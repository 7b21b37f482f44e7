"""Generative-recommendation (HSTU) building blocks on jagged sequences.

A jagged batch is ``values`` ``[L, ...]`` (every sequence's events, one after the other) and
``offsets`` ``[B + 1]`` (``offsets[b]:offsets[b + 1]`` are the rows of sequence ``b``), as in
TorchEasyRec's ``tzrec.modules.gr``.
"""
