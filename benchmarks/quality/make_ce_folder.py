"""Build a random-weight sentence-transformers CrossEncoder folder on a GLiClass checkpoint's backbone.

For speed comparisons with cross-encoder servers (infinity-emb, TEI): the folder has the SAME backbone
config as the GLiClass checkpoint (its `encoder_config`) and the checkpoint's own tokenizer, with a
randomly initialised `AutoModelForSequenceClassification` head (num_labels=1), so the other server does
the same encoder work per token. Scores are meaningless; only speed is comparable.

The tokenizer config names `"tokenizer_class": "PreTrainedTokenizerFast"` (backed by `tokenizer.json`), so
transformers 4.x (which infinity-emb pins) can read a tokenizer written by transformers 5.

    python -m benchmarks.quality.make_ce_folder /tmp/tiny-gliclass /tmp/tiny-ce
    python -m benchmarks.quality.make_ce_folder knowledgator/gliclass-base-v3.0 /tmp/ce-base --seed 0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def make_ce_folder(checkpoint: str | Path, out: str | Path, seed: int = 0) -> Path:
    """Write the CrossEncoder folder to `out` and return it."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from gliclass_rerank.config import build_encoder_config
    from gliclass_rerank.loading import load_config, load_tokenizer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    enc = build_encoder_config(load_config(checkpoint).encoder_config)
    enc.num_labels = 1  # one relevance logit: infinity-emb treats a 1-label SequenceClassification as a reranker
    enc.id2label, enc.label2id = {0: "LABEL_0"}, {"LABEL_0": 0}
    enc.problem_type = None
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(enc)
    model.save_pretrained(str(out), safe_serialization=True)

    tokenizer = load_tokenizer(checkpoint)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{checkpoint}: the tokenizer is not a fast tokenizer (no tokenizer.json to share)")
    tokenizer.save_pretrained(str(out))
    if not (out / "tokenizer.json").is_file():
        raise RuntimeError(f"{out}: the tokenizer wrote no tokenizer.json")
    tc_path = out / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text(encoding="utf-8")) if tc_path.is_file() else {}
    tc["tokenizer_class"] = "PreTrainedTokenizerFast"
    for key in ("backend", "auto_map", "is_local", "local_files_only"):  # transformers 5 / loading-time keys
        tc.pop(key, None)
    tc_path.write_text(json.dumps(tc, indent=2, sort_keys=True), encoding="utf-8")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="GLiClass checkpoint: local folder or Hugging Face Hub id")
    ap.add_argument("out", help="folder to write the CrossEncoder to")
    ap.add_argument("--seed", type=int, default=0, help="seed for the random weights")
    args = ap.parse_args()
    print(make_ce_folder(args.checkpoint, args.out, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
