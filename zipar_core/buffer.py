"""The codes of a batch being decoded: one buffer, laid out ``[grid | EOL | trash | drafts]``.

- grid: the H x W codes in raster order, -1 where a token is not decoded yet;
- EOL: the end-of-row token, which a query at an end-of-row slot is fed from;
- trash: where the outputs of padded queries (and targets no one keeps) are written;
- drafts (Jacobi modes only): the current draft of every grid position, in raster order.

A pass feeds ``buffer.tokens(source)`` and writes its sampled tokens with ``buffer.write(target, values)``, both
index tensors into this one buffer, so a pass needs no Python list of tokens and no host sync.
"""
from __future__ import annotations

import torch

from .layout import EOL, TokenLayout


class CodeBuffer:
    def __init__(self, layout: TokenLayout, batch: int, device: torch.device, drafts: bool = False):
        HW = layout.num_tokens
        self.layout = layout
        self.eol, self.trash, self.draft_base = HW, HW + 1, HW + 2  # entries of the end-of-row token and the trash
        self.codes = torch.full((batch, HW + 2 + (HW if drafts else 0)), -1, dtype=torch.long, device=device)
        self.codes[:, self.eol] = EOL

    def index(self, position) -> int:
        """The entry of a grid position (row, col), or of EOL."""
        return self.eol if position == EOL else position[0] * self.layout.cols + position[1]

    def draft_index(self, position) -> int:
        """The entry of the draft at a grid position (row, col)."""
        return self.draft_base + position[0] * self.layout.cols + position[1]

    def grid(self) -> torch.Tensor:
        """The live (B, H, W) codes (a view: copy it to keep it)."""
        return self.codes[:, : self.layout.num_tokens].view(-1, self.layout.rows, self.layout.cols)

    def tokens(self, source: torch.Tensor) -> torch.Tensor:
        """(b, q) entries -> the (B, q) tokens they hold (b is the batch, or 1 for a plan every image shares)."""
        return self.codes.gather(1, source.expand(self.codes.shape[0], -1))

    def write(self, target: torch.Tensor, values: torch.Tensor) -> None:
        """Write ``values`` (B, n) at the entries ``target`` (B or 1, n)."""
        self.codes.scatter_(1, target.expand(self.codes.shape[0], -1), values)
