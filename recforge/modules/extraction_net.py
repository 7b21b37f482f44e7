"""One extraction network (layer) of PLE (Tang et al. 2020)."""

from __future__ import annotations

import torch
from torch import nn

from recforge.modules.mlp import MLP
from recforge.protos import module_pb2


class ExtractionNet(nn.Module):
    """Task-specific and shared experts, mixed by per-task gates and a shared gate.

    Task ``t``'s output mixes its own ``expert_num_per_task`` experts and the ``share_num``
    shared experts, with a softmax gate computed from task ``t``'s input. Unless this is the
    last layer, the shared output mixes every expert with a gate on the shared input.

    Args:
        task_in_features: input width of each task ``[D_1, ..., D_T]``.
        shared_in_features: input width of the shared path.
        config: the ``ExtractionNetwork`` message.
        final: the last layer (no shared output).

    Shapes:
        ``forward(task_inputs: T x [B, D_t], shared_input: [B, D_s])`` returns
        ``(T x [B, D_e], [B, D_e])`` (the last layer passes ``shared_input`` through).

    """

    def __init__(
        self,
        task_in_features: list[int],
        shared_in_features: int,
        config: module_pb2.ExtractionNetwork,
        final: bool = False,
    ) -> None:
        super().__init__()
        name = config.network_name or "extraction network"
        per_task, shared = config.expert_num_per_task, config.share_num
        if per_task < 1 or not config.task_expert_net.hidden_units:
            raise ValueError(f"{name}: needs expert_num_per_task >= 1 and a task_expert_net")
        has_share_net = config.HasField("share_expert_net")
        share_net = config.share_expert_net if has_share_net else config.task_expert_net
        self.task_experts = nn.ModuleList(
            nn.ModuleList(MLP.from_config(d, config.task_expert_net) for _ in range(per_task))
            for d in task_in_features
        )
        self.shared_experts = nn.ModuleList(
            MLP.from_config(shared_in_features, share_net) for _ in range(shared)
        )
        dims = {e.output_dim() for group in self.task_experts for e in group}  # type: ignore[attr-defined]
        dims |= {e.output_dim() for e in self.shared_experts}  # type: ignore[operator]
        if len(dims) != 1:
            raise ValueError(
                f"{name}: task and shared experts need the same output width, found {sorted(dims)}"
            )
        self._output_dim = dims.pop()
        self.task_gates = nn.ModuleList(nn.Linear(d, per_task + shared) for d in task_in_features)
        num_all = per_task * len(task_in_features) + shared
        self.shared_gate = None if final else nn.Linear(shared_in_features, num_all)

    def output_dim(self) -> int:
        """Width of every output."""
        return self._output_dim

    def forward(
        self, task_inputs: list[torch.Tensor], shared_input: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Runs the layer; the shared output is ``shared_input`` itself in the last layer."""
        shared = [expert(shared_input) for expert in self.shared_experts]
        task_outputs, every_expert = [], []
        for experts, gate, x in zip(self.task_experts, self.task_gates, task_inputs):
            own = [expert(x) for expert in experts]  # type: ignore[attr-defined]
            every_expert += own
            task_outputs.append(_mix(gate(x), own + shared))
        if self.shared_gate is None:
            return task_outputs, shared_input
        return task_outputs, _mix(self.shared_gate(shared_input), every_expert + shared)


def _mix(gate_logits: torch.Tensor, experts: list[torch.Tensor]) -> torch.Tensor:
    """Softmax-weighted sum of expert outputs: ``[B, E]``, ``E x [B, D]`` -> ``[B, D]``."""
    weights = torch.softmax(gate_logits, dim=1).unsqueeze(1)
    return torch.bmm(weights, torch.stack(experts, dim=1)).squeeze(1)
