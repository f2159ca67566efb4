#!/usr/bin/env bash
# The GPU checks a CPU machine cannot make, in one prepared run on a lent GPU machine (issue 20).
#
#   here, once:    python -m benchmarks.gpu_bundle          # .gpu/: wheels, MiniLM (fp16), SciFact + TrecQA
#   there:         bash benchmarks/gpu_checks.sh [STEP ...]  # carry .gpu; results in $OUT (or ./gpu_out)
#
# Steps (default: all, in this order; each under its own time limit, each failure recorded, not fatal):
#   setup      install the carried wheels into /tmp/site, MiniLM back to float32 in /tmp/minilm (idempotent)
#   proof      the SciFact proof recipe trained in fp32 on the GPU, NDCG@10 on all 300 test queries at BM25
#              top 100 (benchmarks.quality.train_scifact)
#   drift      bf16 against fp32 scores of that trained model, 300 queries x BM25 top 100 (max |diff|,
#              Spearman, top-10 overlap, NDCG@10 of both; benchmarks.speed.drift)
#   serving    32 clients, 1 query x 10 and x 100 one-sentence passages, cross-request batching on / off, 3
#              rounds each (benchmarks.serving.load, bf16 server on cuda, the trained model)
#   biencoder  bi-encoder / fused W1 and W3 with warm and cold passage vectors against the same-backbone
#              cross-encoder, bf16 and fp32 (benchmarks.speed.biencoder)
#   compile    torch.compile and CUDA graphs ("reduce-overhead") against eager, W1-W5, MiniLM and
#              DeBERTa-v3-base (12 layers), scores checked against eager (benchmarks.speed.gpu --compile)
#
# The whole run is sized for ~8 minutes on an H100 (one device call runs at most 10): if a call must be
# split, run `setup proof drift serving biencoder` then `setup compile`. Outputs: $OUT/summary.md (the
# figures), $OUT/gpu_checks.tar.gz (every log, JSON and Markdown report), at most 8 files as the tool allows.
set -u
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
BUNDLE="${GPU_BUNDLE:-$REPO/.gpu}"
OUT="${OUT:-$REPO/gpu_out}"
WORK="${GPU_WORK:-/tmp/gpu_checks}"   # logs and reports, packed into $OUT at the end
DEVICE="${GPU_CHECKS_DEVICE:-cuda}"   # cpu only to smoke-test this script (tests/test_gpu_checks.py)
QUICK="${GPU_CHECKS_QUICK:-0}"        # 1: tiny sizes, for the smoke test
mkdir -p "$OUT" "$WORK"
STEPS=("$@")
[ ${#STEPS[@]} -eq 0 ] && STEPS=(setup proof drift serving biencoder compile)

export PYTHONPATH="$REPO:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export BENCH_DATA_ROOT="${BENCH_DATA_ROOT:-$BUNDLE/data}" MINILM_DIR="${MINILM_DIR:-/tmp/minilm}"
PY="${PYTHON:-python3}"

log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$WORK/steps.log"; }

# run NAME SECONDS COMMAND...: one step under `timeout`, its output in $WORK/NAME.log, its status in steps.log
run() {
  local name=$1 limit=$2
  shift 2
  log "start $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >"$WORK/$name.log" 2>&1
  local rc=$?
  log "end $name rc=$rc in $((SECONDS - t0))s"
  [ $rc -ne 0 ] && tail -n 25 "$WORK/$name.log"
  return 0
}

step_setup() {
  if ! "$PY" -c "import fastapi, uvicorn, bm25s, ir_measures" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      "$BUNDLE"/wheels/*.whl || return 1
  fi
  if [ ! -f "$MINILM_DIR/model.safetensors" ]; then
    mkdir -p "$MINILM_DIR" && cp -r "$BUNDLE"/minilm/. "$MINILM_DIR"/ && "$PY" - "$MINILM_DIR" <<'EOF'
import sys
from safetensors.torch import load_file, save_file
path = f"{sys.argv[1]}/model.safetensors"
tensors = {k: v.float() if v.is_floating_point() else v for k, v in load_file(path).items()}
save_file(tensors, path, metadata={"format": "pt"})
EOF
  fi
  "$PY" - <<'EOF' | tee "$WORK/environment.txt"
import platform, torch, transformers
import fastapi, bm25s, ir_measures, sentence_transformers
print("python", platform.python_version(), "torch", torch.__version__, "transformers", transformers.__version__,
      "sentence-transformers", sentence_transformers.__version__, "fastapi", fastapi.__version__)
print("device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
try:
    import flash_attn
    print("flash_attn", flash_attn.__version__)
except ImportError:
    print("flash_attn not installed (no wheel fits the 64 MiB carry; SDPA's fused kernels are used)")
EOF
  command -v nvidia-smi >/dev/null && nvidia-smi >>"$WORK/environment.txt" 2>&1
  return 0
}

PROOF="$WORK/proof"
MODEL="$PROOF/gliclass-scifact"

step_proof() {
  local size=()
  [ "$QUICK" = 1 ] && size=(--steps 2 --test-queries 3 --depth 5 --negatives 3 --eval-batch-size 8)
  run proof 240 "$PY" -m benchmarks.quality.train_scifact --encoder "$MINILM_DIR" --out "$PROOF" --device "$DEVICE" \
    --precision fp32 --depth 100 --steps 300 --batch-size 4 --group-size 4 --encoder-lr 5e-5 --head-lr 2e-4 \
    --seed 1 --eval-batch-size 128 --skip minilm untrained cross-encoder transfer trecqa "${size[@]}"
  cp "$PROOF"/proof.json "$WORK/proof.json" 2>/dev/null
  cp "$PROOF"/proof.md "$WORK/proof.md" 2>/dev/null
}

step_drift() {
  local size=(--queries 300 --depth 100)
  [ "$QUICK" = 1 ] && size=(--queries 3 --depth 5)
  [ -f "$MODEL/config.json" ] || { log "drift skipped: no trained model at $MODEL (run proof first)"; return; }
  run drift 120 "$PY" -m benchmarks.speed.drift --variant bfloat16 --device "$DEVICE" --model "$MODEL" \
    "${size[@]}" --json "$WORK/drift.json"
}

step_serving() {
  local model="$MODEL" size=(--requests 320 --rounds 3 --time-cap 20)
  [ "$QUICK" = 1 ] && size=(--requests 4 --rounds 2 --time-cap 20 --warmup 1 --concurrency 2)
  [ -f "$model/config.json" ] || model=""   # no trained model: the benchmark's tiny random checkpoint
  local dtype=auto
  [ "$DEVICE" = cpu ] && dtype=float32
  run serving 170 "$PY" -m benchmarks.serving.load ${model:+--model "$model"} --device "$DEVICE" --dtype "$dtype" \
    --servers batch nobatch --scenarios short10 short100 --concurrency 32 "${size[@]}" --json "$WORK/serving.json"
}

step_biencoder() {
  local size=(--repeats 5 --sizes 100,1000 --cold-max 1000 --encode 1000)
  [ "$QUICK" = 1 ] && size=(--repeats 1 --workloads W3 --sizes 20 --cold-max 20 --encode 10)
  for dtype in bfloat16 float32; do
    [ "$DEVICE" = cpu ] && [ "$dtype" = bfloat16 ] && continue
    run "biencoder-$dtype" 90 "$PY" -m benchmarks.speed.biencoder --device "$DEVICE" --dtype "$dtype" \
      --out "$WORK/biencoder-$dtype" --models /tmp/gpu_checks_bi_models --skip memory "${size[@]}"
  done
}

step_compile() {
  # eager fp32 / bf16 (the references), both compiled ways in both dtypes, and the CE in bf16 for scale
  local size=(--repeats 5 --budget-s 3) backbones=minilm,deberta-base workloads=W1,W2,W3,W4,W5
  local systems=ours,ours-bfloat16,ours-compile,ours-bfloat16-compile,ours-cudagraphs,ours-bfloat16-cudagraphs,ce-bfloat16
  [ "$QUICK" = 1 ] && size=(--repeats 1 --budget-s 1) backbones=minilm workloads=W3 systems=ours,ours-cudagraphs
  run compile 330 "$PY" -m benchmarks.speed.gpu --device "$DEVICE" --compile --backbones "$backbones" \
    --workloads "$workloads" --linear '' --systems "${GPU_COMPILE_SYSTEMS:-$systems}" "${size[@]}" \
    --ckpts /tmp/gpu_checks_ckpts --out "$WORK/compile"
}

summary() {
  "$PY" - "$WORK" <<'EOF' >"$OUT/summary.md" 2>&1
import json, pathlib, sys
work = pathlib.Path(sys.argv[1])
def load(path):
    try:
        return json.loads((work / path).read_text())
    except (OSError, ValueError):
        return None
print("# GPU checks summary\n")
print("```"); print((work / "environment.txt").read_text() if (work / "environment.txt").exists() else "?")
print((work / "steps.log").read_text() if (work / "steps.log").exists() else ""); print("```\n")
proof = load("proof.json")
if proof:
    print("## proof\n"); print(json.dumps(proof.get("stages", {}), indent=1)[:4000], "\n")
drift = load("drift.json")
if drift:
    print("## drift\n"); print(json.dumps(drift, indent=1), "\n")
serving = load("serving.json")
if serving:
    sys.path.insert(0, str(pathlib.Path.cwd()))
    from benchmarks.serving.load import throughput_ratios
    print("## serving\n")
    for r in serving:
        print(f"- {r['server']} {r['scenario']} round {r.get('round')}: {r['throughput_rps']} req/s, "
              f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, errors {r['errors']}")
    print(*throughput_ratios(serving, sorted({r["scenario"] for r in serving})), sep="\n")
    print()
for name in ("biencoder-bfloat16", "biencoder-float32"):
    bi = load(f"{name}/speed_biencoder.json")
    if bi:
        print(f"## {name}: ms per call, median [min-max], CE / this\n")
        for wname, systems in bi.get("compare", {}).items():
            for system, s in systems.items():
                print(f"- {wname} {system}: {s['median'] * 1e3:.1f} [{s['min'] * 1e3:.1f}-{s['max'] * 1e3:.1f}], "
                      f"{s.get('ce_over_this', float('nan')):.2f}x")
        for n, row in bi.get("sizes", {}).items():
            print(f"- N={n}: " + ", ".join(f"{system} {s['median']:.3f} s" for system, s in row.items()))
        print()
md = work / "compile" / "speed_gpu.md"
if md.exists():
    print("## compile\n"); print(md.read_text()[:12000])
EOF
  # reports and logs only: checkpoints stay behind (the transfer back is capped at 16 MiB a file)
  tar -czf "$OUT/gpu_checks.tar.gz" -C "$WORK" --exclude='gliclass-*' --exclude='*.safetensors' --exclude='*.pt' \
    --exclude='*.bin' . 2>/dev/null
  cp "$WORK/steps.log" "$OUT/steps.log" 2>/dev/null
}

for step in "${STEPS[@]}"; do  # refuse a misspelt step before spending device time
  case "$step" in
    setup | proof | drift | serving | biencoder | compile) ;;
    *) echo "unknown step: $step (steps: setup proof drift serving biencoder compile)" >&2; exit 2 ;;
  esac
done

for step in "${STEPS[@]}"; do
  case "$step" in
    setup) log "start setup"; step_setup 2>&1 | tee -a "$WORK/setup.log"; log "end setup" ;;
    proof) step_proof ;;
    drift) step_drift ;;
    serving) step_serving ;;
    biencoder) step_biencoder ;;
    compile) step_compile ;;
  esac
  summary
done
log "done: ${STEPS[*]}"
cp "$WORK/steps.log" "$OUT/steps.log"
