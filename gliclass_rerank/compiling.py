"""`torch.compile` of the reranker's encoders, CUDA-graph modes included (`GLiClassReranker(compile=...)`).

With mode "reduce-overhead" or "max-autotune" on a GPU, inductor replays CUDA graphs ("CUDA graph trees"): a
compiled call's outputs live in the graph's static memory pool, which the next replay overwrites. Our pooling
returns views of the encoder's output (the first token, the tokens at the label markers), and a bi-encoder keeps
such vectors in its passage-vector cache; a fused bi-encoder also calls its label encoder and then its text
encoder within one forward pass. So each compiled encoder of those modes is wrapped in `CudaGraphSafe`, which
starts a new graph step before the call and hands back clones: nothing the reranker keeps aliases graph memory.
On CPU (no CUDA graphs) the wrapper costs one copy of the hidden states and keeps one code path for all devices.

CUDA graphs record one graph per distinct input shape (batch size, padded length): `packing.collate` pads each
batch to its longest sequence, so a workload of varied lengths records several graphs during its first calls
(each shape is run, then recorded, then replayed). Graphs are also recorded per thread: warm up in the thread
that will serve (the server's model thread re-records what the main thread's `warm_up()` recorded).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .defaults import CUDAGRAPH_COMPILE_MODES, check_compile


def clone_tensors(value: Any) -> Any:
    """`value` with every tensor in it cloned: a tensor, a transformers `ModelOutput` or another mapping, a
    (named) tuple or a list of them, nested; anything else is returned as it is."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, dict):
        items = {key: clone_tensors(item) for key, item in value.items()}
        # transformers' ModelOutput is an OrderedDict dataclass: it takes its fields by name
        return type(value)(**items) if all(isinstance(key, str) for key in items) else type(value)(items)
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple
        return type(value)(*(clone_tensors(item) for item in value))
    if isinstance(value, (tuple, list)):
        return type(value)(clone_tensors(item) for item in value)
    return value


class CudaGraphSafe(nn.Module):
    """A compiled module whose outputs never alias CUDA-graph memory (see the module's docstring).

    Each call marks a new CUDA-graph step (`torch.compiler.cudagraph_mark_step_begin`, so the graph tree does
    not treat two encoder calls of one forward pass as one step) and returns clones of the output tensors.
    Attributes it lacks (`get_input_embeddings`, `config`, ...) are read from the wrapped module.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        torch.compiler.cudagraph_mark_step_begin()
        return clone_tensors(self.module(*args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)  # parameters, buffers, submodules (`module` itself)
        except AttributeError:
            if name == "module":
                raise
            return getattr(self.module, name)


def compile_encoder(module: nn.Module, compile: bool | str) -> nn.Module:
    """`module` compiled as `compile` asks: True -> `torch.compile(module, dynamic=True)`; a mode string ->
    the same with that mode, wrapped in `CudaGraphSafe` for the CUDA-graph modes; False -> `module` itself."""
    compile = check_compile(compile)
    if compile is False:
        return module
    mode = None if compile is True else compile
    # dynamic=True: batch sizes and padded lengths vary call to call; one graph of symbolic shapes serves them
    # (the CUDA-graph modes still record one CUDA graph per concrete shape on top of it).
    compiled = torch.compile(module, mode=mode, dynamic=True)
    return CudaGraphSafe(compiled) if mode in CUDAGRAPH_COMPILE_MODES else compiled


def unwrap(module: nn.Module) -> nn.Module:
    """The eager module under `CudaGraphSafe` and torch.compile's `OptimizedModule` wrappers (itself if none)."""
    while True:
        if isinstance(module, CudaGraphSafe):
            module = module.module
        elif isinstance(getattr(module, "_orig_mod", None), nn.Module):  # torch.compile's OptimizedModule
            module = module._orig_mod
        else:
            return module


def eager_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """`model.state_dict()` under the names it had before its encoders were compiled: the wrappers add
    `_orig_mod.` / `module._orig_mod.` to every key below them, which no loader (ours, upstream) expects."""
    inner = {name: unwrap(child) for name, child in model.named_children()}
    wrapped = {name: module for name, module in inner.items() if module is not getattr(model, name)}
    state = {key: value for key, value in model.state_dict().items() if key.split(".", 1)[0] not in wrapped}
    for name, inner in wrapped.items():
        state.update({f"{name}.{key}": value for key, value in inner.state_dict().items()})
    return state
