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


def _slice_views(values: torch.Tensor, ranges: list[tuple[int, int]]) -> list[torch.Tensor]:
    """Views of ``values``' column ranges, made so that their backward is cheap.

    ``narrow`` gives each view its own backward node, which writes the view's gradient into a
    zero-filled tensor of the input's full size; three groups over a ``[B, W]`` lookup output
    cost three such fills and two full-size additions per step. When the ranges are pairwise
    identical or disjoint, one ``split_with_sizes`` at their edges gives the same views under a
    single node, whose backward concatenates the pieces (zeros only for unused columns).

    Args:
        values: ``[B, W]``.
        ranges: ``(start, end)`` column ranges, repeats allowed.

    Returns:
        ``[B, end - start]`` per range, in order, each a view of ``values``.

    """
    ends: dict[int, int] = {}
    disjoint = True
    for start, end in ranges:
        if start in ends:
            disjoint = disjoint and ends[start] == end
        else:
            ends[start] = end
    starts = list(ends.keys())
    starts.sort()
    for i in range(1, len(starts)):
        disjoint = disjoint and ends[starts[i - 1]] <= starts[i]
    if not disjoint or len(starts) < 2:
        return [values.narrow(1, start, end - start) for start, end in ranges]
    sizes: list[int] = []
    position = 0
    for start in starts:
        if start > position:  # a gap no group reads
            sizes.append(start - position)
        sizes.append(ends[start] - start)
        position = ends[start]
    width = values.size(1)
    if width > position:
        sizes.append(width - position)
    pieces = torch.split_with_sizes(values, sizes, dim=1)
    piece_at: dict[int, int] = {}  # start column -> piece
    position = 0
    for index, size in enumerate(sizes):
        piece_at[position] = index
        position += size
    return [pieces[piece_at[start]] for start, _ in ranges]


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
    # each group as runs (input, start, end) of adjacent keys
    runs: list[list[tuple[int, int, int]]] = []
    for group in groups:
        pieces: list[tuple[int, int, int]] = []
        source, start, end = -1, 0, 0
        for key in group:
            index, key_start, key_end = where[key]
            if index == source and key_start == end:
                end = key_end
                continue
            if source >= 0:
                pieces.append((source, start, end))
            source, start, end = index, key_start, key_end
        pieces.append((source, start, end))
        runs.append(pieces)
    # every run's view, taken per input so that its views share one backward node
    views: list[list[torch.Tensor]] = []
    for index, keyed in enumerate(keyed_tensors):
        ranges: list[tuple[int, int]] = []
        for pieces in runs:
            for source, start, end in pieces:
                if source == index:
                    ranges.append((start, end))
        views.append(_slice_views(keyed.values(), ranges))
    taken = [0 for _ in keyed_tensors]
    grouped: list[torch.Tensor] = []
    for pieces in runs:
        tensors: list[torch.Tensor] = []
        for source, _, _ in pieces:
            tensors.append(views[source][taken[source]])
            taken[source] += 1
        grouped.append(tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=1))
    return grouped
