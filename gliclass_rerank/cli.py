"""The `gliclass-rerank` command: rerank and init, and (with their extras installed) eval, train and serve.

Only the standard library is imported here: `--help` and argument errors answer without loading torch;
each subcommand imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Sequence

from .defaults import COMPILE_MODES

# Subcommands that live in optional modules: name -> (module, help). Each module offers
# `add_arguments(parser)` and `run(args)`; it is imported only when its subcommand runs.
_OPTIONAL_COMMANDS = {
    "init": ("gliclass_rerank.from_encoder", "build a calibrated GLiClass reranker from a plain sentence encoder"),
    "eval": ("gliclass_rerank.evaluation", "measure ranking quality on BEIR / TrecQA data"),
    "train": ("gliclass_rerank.training_args", "fine-tune a GLiClass reranker"),
    "hybrid": ("gliclass_rerank.hybrid",
               "fit a hybrid score (reranker logit + embedding cosine) on dev data and save it in the checkpoint"),
    "serve": ("gliclass_rerank.server.cli", "serve Cohere- and TEI-compatible rerank endpoints"),
    "index": ("gliclass_rerank.indexing", "store a bi-encoder's passage vectors for a corpus (sqlite, redis)"),
}


def iter_json_lines(path: str):
    """(line number, parsed value) of each non-blank line of a JSON-lines file ("-" = stdin); a line that is
    not JSON exits naming the file and line."""
    source = sys.stdin if path == "-" else open(path, encoding="utf-8")
    with source:
        for number, line in enumerate(source, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as error:
                raise SystemExit(f"{path}:{number}: not valid JSON ({error.msg})") from None


def read_passages(path: str) -> list[str]:
    """Passages from a JSON-lines file: each line a string, or an object with "text" (and maybe "title")."""
    passages = []
    for number, item in iter_json_lines(path):
        if isinstance(item, str):
            passages.append(item)
        elif isinstance(item, dict) and isinstance(item.get("text"), str):
            title = item.get("title")
            passages.append(f"{title}\n{item['text']}" if isinstance(title, str) and title else item["text"])
        else:
            raise SystemExit(f'{path}:{number}: expected a string or an object with a "text" string')
    return passages


PACKING_OPTIONS = ("passages_per_pass", "target_length", "max_length", "batch_size")


def add_model_arguments(parser, passage_store: bool = True) -> None:
    """`--model`, `--device`, `--dtype` and the packing knobs (a parser or an argument group); shared with `serve`.
    `passage_store`: also `--passage-store URI` (bi-encoders read stored passage vectors)."""
    parser.add_argument("--model", required=True, help="GLiClass checkpoint: local folder or Hugging Face Hub id")
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps")
    parser.add_argument("--dtype", default="auto", help="auto, float32, float16, bfloat16")
    parser.add_argument("--passages-per-pass", type=int, default=None, help="passages packed per sequence")
    parser.add_argument("--target-length", type=int, default=None,
                   help="listwise packing target: passages join a sequence while it stays within this (default 320)")
    parser.add_argument("--max-length", type=int, default=None, help="hard cap on a packed sequence's tokens")
    parser.add_argument("--batch-size", type=int, default=None, help="most packed sequences per forward pass")
    parser.add_argument("--quantize", choices=("int8",), default=None,
                        help="dynamic int8 Linear layers on CPU (~1.5x faster, ranks move a little)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the encoder (~1.15x on long passages on CPU; tens of seconds to start)")
    # a separate option, not `--compile [MODE]`: an optional value would swallow a positional argument after it
    parser.add_argument("--compile-mode", choices=COMPILE_MODES, default=None, metavar="MODE",
                        help=f"torch.compile with this mode (implies --compile): one of {', '.join(COMPILE_MODES)}; "
                             "reduce-overhead adds CUDA graphs on a GPU")
    if passage_store:
        parser.add_argument("--passage-store", default=None, metavar="URI",
                            help="bi-encoders: read and write passage vectors in this store (sqlite:///file.db, "
                                 "redis://host:6379/0, memory://?max_bytes=N), e.g. one filled by `index`")


def model_options(args: argparse.Namespace) -> dict:
    """The packing and speed knobs given on the command line (unset ones keep the library defaults)."""
    options = {key: getattr(args, key) for key in PACKING_OPTIONS if getattr(args, key) is not None}
    if getattr(args, "quantize", None):
        options["quantize"] = args.quantize
    if getattr(args, "compile_mode", None):
        options["compile"] = args.compile_mode
    elif getattr(args, "compile", False):
        options["compile"] = True
    if getattr(args, "passage_store", None):
        options["passage_store"] = args.passage_store
    return options


def _rerank(args: argparse.Namespace) -> int:
    from .reranker import GLiClassReranker

    passages = read_passages(args.passages)
    reranker = GLiClassReranker.from_pretrained(args.model, device=args.device, dtype=args.dtype,
                                                **model_options(args))
    results = reranker.rerank(args.query, passages, top_n=args.top_n, threshold=args.threshold, mode=args.mode)
    for position, result in enumerate(results, start=1):
        record = {"rank": position, "index": result.index, "score": result.score}
        if result.truncated:
            record["truncated"] = True
        record["text"] = result.text
        print(json.dumps(record, ensure_ascii=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `gliclass-rerank`."""
    parser = argparse.ArgumentParser(prog="gliclass-rerank", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    rerank = commands.add_parser("rerank", help="rerank passages for one query, print JSON lines")
    add_model_arguments(rerank)
    rerank.add_argument("--query", required=True, help="the query")
    rerank.add_argument("--passages", required=True, help="JSON-lines file of passages (strings or {text}); - = stdin")
    rerank.add_argument("--top-n", type=int, default=None, help="print at most N results")
    rerank.add_argument("--threshold", type=float, default=None, help="drop results scoring below this")
    rerank.add_argument("--mode", choices=("listwise", "nli"), default="listwise")
    rerank.set_defaults(handler=_rerank)

    for name, (_, help_text) in _OPTIONAL_COMMANDS.items():
        # Listed here for --help; their own options are parsed in `main`, importing only the one used.
        commands.add_parser(name, help=help_text, add_help=False)
    return parser


def _run_optional(name: str, argv: Sequence[str]) -> int:
    module_name, help_text = _OPTIONAL_COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise SystemExit(f"`gliclass-rerank {name}` needs an optional dependency that is missing: {error}") from None
    parser = argparse.ArgumentParser(prog=f"gliclass-rerank {name}", description=help_text)
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return module.run(args) or 0
    except (ValueError, TypeError, FileNotFoundError) as error:
        raise SystemExit(f"gliclass-rerank {name}: {error}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `gliclass-rerank` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _OPTIONAL_COMMANDS:
        return _run_optional(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, TypeError, FileNotFoundError) as error:
        raise SystemExit(f"gliclass-rerank: {error}") from None


if __name__ == "__main__":
    sys.exit(main())
