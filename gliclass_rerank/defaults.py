"""The library's default knobs and their common check, in one module that imports nothing heavy.

`reranker` (inference) and `training_args` (the `train` command) read them from here, so the command line can
show and check them without importing torch.
"""

from __future__ import annotations

from typing import Any

# Defaults chosen by `python -m benchmarks.speed` (see docs/benchmarks.md).
DEFAULT_PASSAGES_PER_PASS = 16
DEFAULT_TARGET_LENGTH = 320
DEFAULT_MAX_LENGTH = 512
# Cuts no query, claim or hypothesis of the collections in ../shared/data (longest: 100 tokens, a Medline
# query; benchmarks/quality/query_lengths.py, docs/benchmarks.md); only a budget, short queries cost nothing more.
DEFAULT_MAX_QUERY_TOKENS = 128
DEFAULT_BATCH_SIZE = 64
DEFAULT_MAX_BATCH_TOKENS = 8192
# On a GPU the per-pass Python and launch work dominates small passes (docs/benchmarks.md, H200): bigger
# passes ran W1 at 1.47x and W4 at 1.17x the CPU-sized ones, same scores.
GPU_BATCH_SIZE = 256
GPU_MAX_BATCH_TOKENS = 65536


def positive_int(name: str, value: Any) -> int:
    """`value` when it is an integer >= 1; else a ValueError naming the knob and the value."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}: must be an integer >= 1")
    return value


# torch.compile's modes (`GLiClassReranker(compile=...)`, `--compile-mode MODE`); True is torch.compile's own default.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# The modes that replay CUDA graphs on a GPU (their outputs live in memory the next replay overwrites).
CUDAGRAPH_COMPILE_MODES = ("reduce-overhead", "max-autotune")


def check_compile(value: Any) -> bool | str:
    """`value` when it is False, True or one of `COMPILE_MODES`; else a ValueError naming it and those."""
    if value is True or value is False or (isinstance(value, str) and value in COMPILE_MODES):
        return value
    raise ValueError(f"compile={value!r}: expected False, True or a torch.compile mode "
                     f"({', '.join(repr(m) for m in COMPILE_MODES)})")
