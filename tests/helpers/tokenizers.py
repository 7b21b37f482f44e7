"""A tiny Hugging Face ``tokenizer.json`` for the tokenize-feature tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def word_level_tokenizer(directory: Path, vocab: dict[str, int]) -> str:
    """Writes a word-level ``tokenizer.json`` (splits on whitespace and punctuation).

    Args:
        directory: where to write it.
        vocab: token -> id; must hold ``[UNK]``, the id of unknown words.

    Returns:
        The file's path. Skips the test when ``tokenizers`` is not installed.
    """
    pytest.importorskip("tokenizers")
    spec = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"},
    }
    path = directory / "tokenizer.json"
    path.write_text(json.dumps(spec))
    return str(path)
