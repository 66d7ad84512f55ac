"""Where every image token of a model lives in its sequence.

A model's sequence is ``prefix`` condition slots (class token, caption, prompt), then the image grid in
raster order. Models with an end-of-row token (Lumina-mGPT, Emu3-Gen) spend one extra slot after every
row; models without one (LlamaGen, Janus-Pro) do not. The sampler addresses the key/value cache by slot,
so this mapping is the only place that knows how the grid is laid out.
"""
from __future__ import annotations

from dataclasses import dataclass

EOL = -1  # the end-of-row token, as the sampler and the schedules speak of it (adapters map it to their vocabulary)


@dataclass(frozen=True)
class TokenLayout:
    rows: int  # H: image rows, in tokens
    cols: int  # W: image columns, in tokens
    prefix: int  # slots before the first image token (condition / prompt)
    eol: bool = False  # the model feeds an end-of-row token after each row

    def __post_init__(self):
        if self.rows < 1 or self.cols < 1:
            raise ValueError(f"a token grid needs at least one row and column, got {self.rows}x{self.cols}")
        if self.prefix < 1:
            raise ValueError("the prefix must hold at least one slot: the first image token is predicted from it")

    @property
    def row_stride(self) -> int:
        return self.cols + int(self.eol)

    @property
    def num_tokens(self) -> int:
        return self.rows * self.cols

    @property
    def num_slots(self) -> int:
        """Slots the cache needs for prefix and grid (the last row's EOL included when the model has one)."""
        return self.prefix + self.rows * self.row_stride

    def slot(self, row: int, col: int) -> int:
        return self.prefix + row * self.row_stride + col

    def eol_slot(self, row: int) -> int:
        if not self.eol:
            raise ValueError("this layout has no end-of-row token")
        return self.prefix + row * self.row_stride + self.cols

    def locate(self, slot: int) -> tuple[int, int]:
        """(row, col) of an image slot; col == cols for an EOL slot."""
        if slot < self.prefix:
            raise ValueError(f"slot {slot} is a prefix slot")
        return divmod(slot - self.prefix, self.row_stride)
