"""Exponential moving average of a model's weights, without a host sync per update."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class EMA:
    """``W_ema <- decay · W_ema + (1 − decay) · W`` after every optimizer step, the first update copying W (as
    ``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn``, bitwise): one foreach lerp per dtype and
    device, and the update count kept on the host. (AveragedModel compares an on-device counter every update, a
    host sync per optimizer step on a GPU.) Buffers are copied, not averaged (the model's are derived ones).

    ``module`` is the averaged model (validated and saved as best.pth)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model)
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema = [p.detach() for p in self.module.parameters()]
        current = [p.detach() for p in model.parameters()]
        if self.updates == 0:
            torch._foreach_copy_(ema, current)
        else:
            groups: dict[tuple[torch.device, torch.dtype], tuple[list, list]] = {}
            for e, c in zip(ema, current):
                pair = groups.setdefault((e.device, e.dtype), ([], []))
                pair[0].append(e)
                pair[1].append(c)
            for e, c in groups.values():
                torch._foreach_lerp_(e, c, 1 - self.decay)
        for e, c in zip(self.module.buffers(), model.buffers()):
            e.copy_(c)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Our state, or an ``AveragedModel`` state dict of an earlier version (``module.*`` keys, ``n_averaged``)."""
        if "n_averaged" in state:
            self.module.load_state_dict({k[len("module."):]: v for k, v in state.items() if k.startswith("module.")})
            self.updates = int(state["n_averaged"])
            return
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
