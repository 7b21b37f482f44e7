"""The demo data sets, the example configs that train on them, and ``recforge demo``.

One job per module: :mod:`~recforge.demo.world` (the hidden parameters of the planted-signal
CTR data), :mod:`~recforge.demo.sequences` (its behaviour sequences),
:mod:`~recforge.demo.simulate` (its tables and parquet files),
:mod:`~recforge.demo.retrieval` (the retrieval demo data), :mod:`~recforge.demo.configs`
(loading ``examples/*.config`` with their paths moved) and :mod:`~recforge.demo.run` (the
``recforge demo`` command).
"""
