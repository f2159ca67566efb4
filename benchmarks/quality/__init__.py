"""Quality benchmarks: `python -m benchmarks.quality.train_scifact` (the proof), `.order_sensitivity`,
`.query_lengths` and `.make_ce_folder` (see `benchmarks/__init__.py`)."""
