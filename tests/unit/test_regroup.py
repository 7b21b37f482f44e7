"""regroup_by_slices: the same tensors and gradients as torchrec's regroup, views where it can."""

from __future__ import annotations

import torch
from torchrec.sparse.jagged_tensor import KeyedTensor

from recforge.modules.regroup import regroup_by_slices


def _inputs() -> tuple[KeyedTensor, KeyedTensor]:
    torch.manual_seed(0)
    wide = [f"f{i}@t{i}_wide" for i in range(4)]
    deep = [f"f{i}@t{i}" for i in range(4)]
    pooled = KeyedTensor(
        keys=wide + deep,
        length_per_key=[2] * 4 + [3, 5, 3, 3],
        values=torch.randn(6, 22, requires_grad=True),
    )
    dense = KeyedTensor(
        keys=["d1", "d2"], length_per_key=[1, 2], values=torch.randn(6, 3, requires_grad=True)
    )
    return pooled, dense


GROUPS = [
    [f"f{i}@t{i}_wide" for i in range(4)],  # one run of the first input
    [f"f{i}@t{i}" for i in range(4)],  # the same keys used again by two groups
    [f"f{i}@t{i}" for i in range(4)] + ["d2"],  # two inputs
    ["f2@t2", "d1", "f0@t0", "f1@t1"],  # out of order
]


def test_matches_torchrec_regroup_values_and_gradients() -> None:
    pooled, dense = _inputs()
    ours = regroup_by_slices([pooled, dense], GROUPS)
    theirs = KeyedTensor.regroup([pooled, dense], GROUPS)
    weights = [torch.randn_like(t) for t in theirs]
    assert [t.shape for t in ours] == [t.shape for t in theirs]
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
    leaves = [pooled.values(), dense.values()]
    grads_ours = torch.autograd.grad(sum((w * t).sum() for w, t in zip(weights, ours)), leaves)
    grads_theirs = torch.autograd.grad(sum((w * t).sum() for w, t in zip(weights, theirs)), leaves)
    for a, b in zip(grads_ours, grads_theirs):
        assert torch.allclose(a, b)


def test_contiguous_group_is_a_view() -> None:
    pooled, dense = _inputs()
    wide, deep, *_ = regroup_by_slices([pooled, dense], GROUPS)
    assert wide.untyped_storage().data_ptr() == pooled.values().untyped_storage().data_ptr()
    assert deep.data_ptr() == pooled.values()[:, 8:].data_ptr()


def test_scripts_and_reads_keys_at_run_time() -> None:
    # a tower export feeds a dense KeyedTensor with other keys: positions come from the input
    scripted = torch.jit.script(regroup_by_slices)
    pooled, _ = _inputs()
    other_dense = KeyedTensor(keys=["d2"], length_per_key=[2], values=torch.randn(6, 2))
    groups = [["f1@t1", "d2"]]
    expected = torch.cat([pooled.values()[:, 11:16], other_dense.values()], dim=1)
    assert torch.equal(scripted([pooled, other_dense], groups)[0], expected)
    assert torch.equal(regroup_by_slices([pooled, other_dense], groups)[0], expected)


def test_identical_or_disjoint_slices_share_one_backward_node() -> None:
    # DeepFM's wide / fm / deep groups, with the first wide key unused (a gap)
    pooled, dense = _inputs()
    groups = [GROUPS[0][1:], GROUPS[1], GROUPS[2]]
    wide, fm, deep = regroup_by_slices([pooled, dense], groups)
    assert type(wide.grad_fn).__name__ == type(fm.grad_fn).__name__ == "SplitWithSizesBackward0"
    assert wide.grad_fn is fm.grad_fn
    assert fm.data_ptr() == pooled.values()[:, 8:].data_ptr()  # still views
    theirs = KeyedTensor.regroup([pooled, dense], groups)
    leaves = [pooled.values(), dense.values()]
    weights = [torch.randn_like(t) for t in theirs]
    ours_grads = torch.autograd.grad(
        sum((w * t).sum() for w, t in zip(weights, (wide, fm, deep))), leaves
    )
    their_grads = torch.autograd.grad(sum((w * t).sum() for w, t in zip(weights, theirs)), leaves)
    for a, b in zip(ours_grads, their_grads):
        assert torch.equal(a, b)
    assert torch.equal(ours_grads[0][:, :2], torch.zeros(6, 2))
