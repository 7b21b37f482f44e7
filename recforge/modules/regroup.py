"""Feature groups as slices of the embedding lookup's output.

torchrec's ``KeyedTensor.regroup`` splits every input into one tensor per key and concatenates
them again per group whenever a key is used by more than one group (DeepFM's ``fm`` and
``deep`` groups share their features). Measured on a 2-core CPU, that took 5.5 ms per step
(forward + backward) for Frappe DeepFM and 13 ms for a Criteo-shaped DeepFM; most groups are a
contiguous run of the lookup's output, so a view of it costs nothing.

A module that calls ``regroup_by_slices`` in a traced ``forward`` must declare
``torch.fx.wrap("regroup_by_slices")`` itself (torch.fx patches the caller's globals): the
function iterates over keys, which a tracer cannot, and TorchScript compiles it from source
(hence no ``from __future__ import annotations`` here).
"""

import torch
from torchrec.sparse.jagged_tensor import KeyedTensor


def regroup_by_slices(
    keyed_tensors: list[KeyedTensor], groups: list[list[str]]
) -> list[torch.Tensor]:
    """Concatenates the named keys of ``keyed_tensors`` per group.

    Keys that are adjacent in the same input become one slice; a group made of a single slice
    is returned as a view of the input (no copy).

    Args:
        keyed_tensors: inputs with ``key_dim() == 1``, each ``values()`` ``[B, sum(dims)]``.
        groups: the keys of each group, in output order; every key must be in an input.

    Returns:
        One ``[B, sum(dims of the group's keys)]`` tensor per group.

    """
    where: dict[str, tuple[int, int, int]] = {}
    for index, keyed in enumerate(keyed_tensors):
        offsets = keyed.offset_per_key()
        for position, key in enumerate(keyed.keys()):
            where[key] = (index, offsets[position], offsets[position + 1])
    grouped: list[torch.Tensor] = []
    for group in groups:
        pieces: list[torch.Tensor] = []
        source, start, end = -1, 0, 0
        for key in group:
            index, key_start, key_end = where[key]
            if index == source and key_start == end:
                end = key_end
                continue
            if source >= 0:
                pieces.append(keyed_tensors[source].values().narrow(1, start, end - start))
            source, start, end = index, key_start, key_end
        pieces.append(keyed_tensors[source].values().narrow(1, start, end - start))
        grouped.append(pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1))
    return grouped
