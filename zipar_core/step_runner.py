"""Static-shape model steps, for ``torch.compile`` and CUDA graphs.

An eager step attends to the first ``kv_len`` slots, a length that changes every pass. Here every step
reads the whole cache (unwritten slots stay masked, so the result is the same) and the only shape that
varies is the number of query tokens of the pass (the rows in flight and the overwrites of placeholders; in
the Jacobi modes, every chain's head, drafts and end-of-row tokens). That gives ``torch.compile`` one dynamic
dimension, and CUDA graphs one captured graph per query count (at most the mode's ``widest_pass``, a bound
known up front), replayed after copying the step's inputs into static buffers.
"""
from __future__ import annotations

import torch


class StaticStep:
    """Calls ``model.forward(cond, tokens, slots, visible, cache)`` with keys padded to the full cache."""

    def __init__(self, model, cond, cache, num_slots: int, compile: bool = False, cuda_graphs: bool = False):
        self.model, self.cond, self.cache, self.num_slots = model, cond, cache, num_slots
        self.forward = model.forward
        if compile:
            self.forward = torch.compile(model.forward, dynamic=True)
        self.cuda_graphs = cuda_graphs and graphs_available(model.device)
        self.graphs: dict[int, tuple] = {}  # q -> (replay, tokens, slots, visible, logits)
        # One memory pool for all graphs: safe because every output is cloned right after its replay, so
        # a later replay of another graph may reuse the memory; the pool costs one graph, not one per query count.
        self.pool = torch.cuda.graph_pool_handle() if self.cuda_graphs else None

    def __call__(self, tokens: torch.Tensor, slots: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        full = torch.zeros((*visible.shape[:2], self.num_slots), dtype=torch.bool, device=visible.device)
        full[..., : visible.shape[-1]] = visible
        if not self.cuda_graphs:
            return self.forward(self.cond, tokens, slots, full, self.cache)
        q = tokens.shape[1]
        if q not in self.graphs:
            s_tokens, s_slots, s_visible = tokens.clone(), slots.clone(), full.clone()
            replay, s_logits = record_cuda_graph(
                lambda: self.forward(self.cond, s_tokens, s_slots, s_visible, self.cache), self.pool)
            self.graphs[q] = replay, s_tokens, s_slots, s_visible, s_logits
        replay, s_tokens, s_slots, s_visible, s_logits = self.graphs[q]
        s_tokens.copy_(tokens)
        s_slots.copy_(slots)
        s_visible.copy_(full)
        replay()
        return s_logits.clone()  # the next replay overwrites the static output


def graphs_available(device: torch.device) -> bool:
    return device.type == "cuda"


def record_cuda_graph(step, pool=None):
    """Warm up ``step`` (a call reading only static tensors) on a side stream, then capture it into a
    CUDA graph. Returns (replay, output): replay() reruns the captured kernels and refills ``output``.
    The warm-up writes the current step's K/V; the replay that follows writes the same values again."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        output = step()
    return graph.replay, output
