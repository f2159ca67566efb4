"""Speed and memory benchmarks (CPU harness in `__main__.py`: `python -m benchmarks.speed --help`).

`ckpts.py` builds the random-weight checkpoints, `data.py` the workloads W1-W5 from real text, `systems.py`
the timed systems; `report.py`, `gpu.py`, `profile_w1.py`, `target_sweep.py` and `drift.py` are run
as `python -m benchmarks.speed.<name>` (see `benchmarks/__init__.py`).
"""
