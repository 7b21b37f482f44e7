"""Item indexes of match-model exports: ``recforge build-index`` and ``load_retriever``.

* :mod:`~recforge.index.build`: embed the item table with the item tower, write the index;
* :mod:`~recforge.index.retriever`: embed user rows with the user tower, search the index;
* :mod:`~recforge.index.files`: the ``item_index/`` directory (atomic write, checked read);
* :mod:`~recforge.index.faiss_backend`: index types, metrics and search settings (faiss is
  the optional ``faiss`` extra, imported only when an index is built or loaded).
"""

from recforge.index.errors import RetrievalIndexError

__all__ = ["RetrievalIndexError"]
