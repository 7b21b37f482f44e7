"""The description of an export in its ``model_info.json``: inputs, outputs, versions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from recforge.features import BaseFeature

FORMAT_VERSION = 1


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _shape(tensor: torch.Tensor, batch_size: int) -> list:
    return ["B" if i == 0 and n == batch_size else int(n) for i, n in enumerate(tensor.shape)]


def describe_model(
    model_features: Sequence[BaseFeature], outputs: dict[str, torch.Tensor], batch_size: int
) -> dict:
    """The ``inputs``/``features``/``outputs`` part of ``model_info.json``."""
    features, inputs = [], []
    for feature in model_features:
        if feature.stub_type:  # an FG intermediate: no model input
            continue
        kind = "sparse" if feature.is_sparse else "dense"
        if feature.is_sparse:
            tensors: list[dict[str, Any]] = [
                {"name": f"{feature.name}.values", "dtype": "int64", "shape": ["N"]},
                {"name": f"{feature.name}.lengths", "dtype": "int32", "shape": ["B"]},
            ]
            if feature.is_weighted:
                tensors.append(
                    {"name": f"{feature.name}.weights", "dtype": "float32", "shape": ["N"]}
                )
            elements = feature.element_lengths_key
            if elements is not None:
                tensors += [
                    {"name": f"{elements}.values", "dtype": "int64", "shape": ["E"]},
                    {"name": f"{elements}.lengths", "dtype": "int32", "shape": ["B"]},
                ]
        else:
            tensors = [
                {
                    "name": f"{feature.name}.values",
                    "dtype": "float32",
                    "shape": ["B", feature.dense_width],
                }
            ]
        entry: dict[str, Any] = {
            "name": feature.name,
            "type": type(feature).__name__,
            "kind": kind,
            "source_columns": list(feature.inputs),
            "tensors": [t["name"] for t in tensors],
        }
        if feature.is_sparse:
            entry["embedding_dim"] = feature.embedding_dim
            entry["num_embeddings"] = feature.num_embeddings
        else:
            entry["value_dim"] = feature.value_dim
        features.append(entry)
        inputs += [{**t, "feature": feature.name, "kind": kind} for t in tensors]
    from recforge.datasets.data_parser import DataParser

    columns = DataParser(model_features).input_columns
    return {
        "features": features,
        "inputs": inputs,
        "input_columns": columns,
        "outputs": [
            {"name": k, "dtype": _dtype_name(v.dtype), "shape": _shape(v, batch_size)}
            for k, v in outputs.items()
        ],
    }


def versions() -> dict[str, str]:
    """Installed versions of recforge and the packages an exported model runs on."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("recforge", "torch", "torchrec", "fbgemm-gpu-cpu", "fbgemm-gpu"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found
