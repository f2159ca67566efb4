"""Benchmarks of gliclass-rerank: scripts, not library code (never shipped in the wheel, never collected by
pytest). The numbers, with the command, machine, date and min/median/max of each, are in docs/benchmarks.md.

Run every command from the repository root; `--help` prints a script's options.

What lives where:

- `common.py`: helpers shared by the concerns: `DATA_ROOT` (real text in ../shared/data next to the
  repository, never copied into it; `$BENCH_DATA_ROOT` elsewhere), `minilm_dir()` (all-MiniLM-L6-v2, or
  `$MINILM_DIR`), `machine_header()`, `spread()` (min / median / max), `quiet_transformers()`.
- `speed/`: throughput and memory of the scorer against upstream `gliclass` and a CrossEncoder, timed side
  by side in one process (docs/benchmarks.md sections 1-3, docs/speed.md)

      python -m benchmarks.speed --quick --out /tmp/speed_quick     # CPU harness (speed/__main__.py)
      python -m benchmarks.speed.report /tmp/speed_quick            # speed.md and plots from speed.json
      python -m benchmarks.speed.gpu --out /tmp/speed_gpu           # the same systems on a CUDA device
      python -m benchmarks.speed.profile_w1                         # W1 on CPU, taken apart
      python -m benchmarks.speed.target_sweep minilm 3              # packing targets against the CE
      python -m benchmarks.speed.drift --variant int8 --model DIR  # int8 / bf16 / fp16 drift and speed-up
      python -m benchmarks.speed.ckpts [BACKBONE ...]               # build the random-weight checkpoints

  `ckpts.py` (checkpoints), `data.py` (workloads W1-W5) and `systems.py` (the timed systems) are shared by
  the scripts of `speed/`.
- `serving/`: the rerank server under load and under faults, on loopback (docs/benchmarks.md section 6)

      python -m benchmarks.serving.load                             # batch / nobatch / ray2, tiny checkpoint
      python -m benchmarks.serving.faults                           # fault cases, each on a fresh server

- `quality/`: ranking quality, training and measurements behind defaults (docs/benchmarks.md sections 2a,
  4, 5; docs/evaluation.md)

      python -m benchmarks.quality.train_scifact --out /tmp/proof   # the proof: fine-tune on SciFact
      python -m benchmarks.quality.order_sensitivity --model DIR    # listwise score vs passage order
      python -m benchmarks.quality.query_lengths                    # query token lengths (max_query_tokens)
      python -m benchmarks.quality.make_ce_folder CKPT OUT          # random CrossEncoder on CKPT's backbone
      python -m benchmarks.quality.hybrid_sweep --model DIR --out D C1 C2 ...  # logit / cosine mixes, in and
                                                                    # out of domain, from one scoring pass

Bi-encoders (passages as cached vectors):

      python -m benchmarks.speed.biencoder --out /tmp/speed_bi      # W1/W3 warm and cold vectors vs the CE
      python -m benchmarks.quality.biencoder --out /tmp/bi_quality  # NDCG/MAP of bi-encoders beside BM25, cosine

The GPU checks (a lent GPU machine: no network, 64 MiB carried, minutes of device time), prepared as one run
that calls the scripts above (docs/benchmarks.md section 7):

      python -m benchmarks.gpu_bundle                               # here: .gpu/ (wheels, MiniLM, data)
      bash benchmarks/gpu_checks.sh [STEP ...]                      # there, carrying .gpu: proof, drift,
                                                                    # serving, biencoder, compile

Where a new benchmark goes: speed or memory of a system (e.g. a vector store's query latency) in `speed/`;
ranking or retrieval quality in `quality/`; anything about the HTTP server in `serving/`. Import siblings
package-relative (`from .data import ...`, `from ..common import ...`), never through `sys.path`, and
document the `python -m benchmarks.<concern>.<script>` command here and in docs/benchmarks.md.
"""
