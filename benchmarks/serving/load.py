"""Bounded load test of the rerank server on loopback (127.0.0.1 only).

Starts each server configuration as a subprocess, drives it with N concurrent clients sending a
fixed number of requests (with a time cap), and prints throughput, latency percentiles, errors and
the server's peak memory (the whole process tree, sampled from /proc).

Scenarios (real text read from ``--data-root``, default ``../shared/data`` next to the repo; never copied
into it; loaded lazily, once; payloads are a pure function of ``--seed``):
- ``real20``: 1 SciFact test claim (``beir_scifact/queries.jsonl``, ids from ``qrels/test.tsv``) x 20
  SciFact abstracts (title + text, cut to the first 200 words). ``--real20-pool bm25`` (default): the
  claim's BM25 top 20 over the whole corpus (bm25s with the settings of the package's evaluation first
  stage; falls back to ``random`` when bm25s is not installed); ``random``: the claim's judged-relevant
  abstracts plus random corpus abstracts, shuffled.
- ``short100``: 1 TrecQA question (``trecqa/train.jsonl`` + ``dev.jsonl``) x 100 one-sentence candidate
  answers: the question's own candidates, filled up to 100 with candidates drawn at random from the other
  questions, shuffled.
- ``short10``: the same with 10 candidates: a request that cannot fill a forward pass alone, where
  cross-request batching has work to merge.

Servers: ``batch`` (cross-request batching on), ``nobatch`` (off), ``ray2`` (Ray Serve, two
replicas, needs ``ray[serve]``), ``ray1`` / ``ray1-nobatch`` (one Ray Serve replica with its
``@serve.batch`` batching on / off: Ray's batcher head-to-head with ours), ``infinity`` (infinity-emb serving a sentence-transformers
CrossEncoder on the SAME backbone as the GLiClass checkpoint: needs ``--infinity-python``; see below).
Our servers are loaded through ``--api`` (default Cohere ``/v2/rerank``); infinity through its
Cohere-style ``POST /rerank`` ({model, query, documents, return_documents}). Each server uses torch's
default CPU threads, float32, unless `--device` / `--dtype` say otherwise.

    python -m benchmarks.serving.load                           # tiny random checkpoint, batch/nobatch/ray2
    python -m benchmarks.serving.load --model DIR --servers batch nobatch ray2 --requests 300
    python -m benchmarks.serving.load --soak 600 --rate 5       # 10-minute soak at 5 req/s (real20, batch)
    python -m benchmarks.serving.load --burst 200               # queue-bound burst: 429s, accepted all done
    python -m benchmarks.serving.load --url http://127.0.0.1:8000 --api tei   # an already running server
    python -m benchmarks.serving.load --model DIR --device cuda --dtype auto --servers batch nobatch \\
        --scenarios short10 short100 --rounds 3                # cross-request batching on a GPU

infinity-emb comparison. infinity-emb pins transformers 4.x / sentence-transformers 3.x, so it lives in
its own virtualenv:

    python -m venv /tmp/infinity-venv
    /tmp/infinity-venv/bin/pip install torch==2.13.0 "infinity-emb[server,torch]"
    python -m benchmarks.quality.make_ce_folder DIR /tmp/ce-folder    # random-weight CrossEncoder, DIR's backbone
    python -m benchmarks.serving.load --model DIR --servers batch nobatch infinity \\
        --infinity-python /tmp/infinity-venv/bin/python --infinity-model /tmp/ce-folder

Without ``--infinity-model`` the CrossEncoder folder is built from ``--model`` into a temporary folder.
infinity runs ``v2 --engine torch --device cpu --dtype float32 --no-compile --no-vector-disk-cache``
(its default ``--batch-size 32``; add flags with ``--infinity-args``) with telemetry off and the Hugging
Face Hub offline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from ..common import DATA_ROOT, machine_header, spread
REAL20_DOCS, REAL20_WORDS, SHORT100_DOCS, SHORT10_DOCS = 20, 200, 100, 10


# ------------------------------------------------------------------------------------------ data
class TextData:
    """Real text for the scenarios, read from `root` on first use and kept (one load per process)."""

    def __init__(self, root: str | Path = DATA_ROOT, real20_pool: str = "bm25"):
        self.root = Path(root)
        self.real20_pool = real20_pool  # becomes "random" if bm25 is asked for and bm25s is missing
        self._scifact: tuple | None = None
        self._trecqa: tuple | None = None
        self._trecqa_distinct: int | None = None

    def _need(self, path: Path) -> Path:
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: point --data-root at the shared data folder "
                                    f"(see its README.md)")
        return path

    def scifact(self) -> tuple[list[tuple[str, str]], dict[str, str], dict[str, list[str]], list[str]]:
        """([(test claim id, claim)], doc id -> title+text cut to 200 words, claim id -> its BM25 top 20 or
        its judged-relevant doc ids, all doc ids). Read directly (no torch import in the load client)."""
        if self._scifact is None:
            folder = self._need(self.root / "beir_scifact")
            with open(self._need(folder / "corpus.jsonl"), encoding="utf-8") as f:
                rows = [json.loads(line) for line in f if line.strip()]
            docs = {str(r["_id"]): " ".join(f"{r.get('title') or ''} {r.get('text') or ''}".split()[:REAL20_WORDS])
                    for r in rows}
            ids = sorted(docs)
            with open(self._need(folder / "queries.jsonl"), encoding="utf-8") as f:
                texts = {str(q["_id"]): q["text"] for q in (json.loads(line) for line in f if line.strip())}
            relevant: dict[str, list[str]] = {}
            with open(self._need(folder / "qrels" / "test.tsv"), encoding="utf-8") as f:
                next(f)  # header
                for line in f:
                    q, d, g = line.rstrip("\n").split("\t")
                    if int(g) > 0:
                        relevant.setdefault(q, []).append(d)
            qids = sorted(relevant)
            lists = {q: sorted(relevant[q]) for q in qids}
            if self.real20_pool == "bm25":
                try:
                    lists = self._bm25_top(rows, ids, [texts[q] for q in qids], qids)
                except ImportError:
                    print("# real20: bm25s not installed (pip install bm25s): random corpus docs instead",
                          flush=True)
                    self.real20_pool = "random"
            self._scifact = ([(q, texts[q]) for q in qids], docs, lists, ids)
        return self._scifact

    @staticmethod
    def _bm25_top(rows, ids, queries, qids) -> dict[str, list[str]]:
        """BM25 top 20 over the FULL title + text (the settings of gliclass_rerank.evaluation.bm25)."""
        import bm25s
        from bm25s.tokenization import Tokenizer

        full = {str(r["_id"]): f"{r.get('title') or ''} {r.get('text') or ''}".strip() for r in rows}
        tokenizer = Tokenizer(stopwords="en", stemmer=None)
        retriever = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
        retriever.index(tokenizer.tokenize([full[d] for d in ids], show_progress=False, return_as="tuple"),
                        show_progress=False)
        tokens = tokenizer.tokenize(queries, update_vocab=False, show_progress=False, return_as="ids")
        top, _ = retriever.retrieve(tokens, k=REAL20_DOCS, show_progress=False, n_threads=1)
        return {q: [ids[int(j)] for j in top[row]] for row, q in enumerate(qids)}

    def trecqa(self) -> tuple[list[tuple[str, list[str]]], list[str]]:
        """([(question, its distinct candidate sentences)], every candidate sentence of every question)."""
        if self._trecqa is None:
            questions, pool = [], []
            for split in ("train", "dev"):
                with open(self._need(self.root / "trecqa" / f"{split}.jsonl"), encoding="utf-8") as f:
                    for line in filter(str.strip, f):
                        row = json.loads(line)
                        cands = list(dict.fromkeys(c["text"] for c in row["candidates"]))
                        questions.append((row["query"], cands))
                        pool.extend(cands)
            self._trecqa = (questions, pool)
        return self._trecqa

    def trecqa_distinct(self) -> int:
        """How many distinct candidate sentences the TrecQA files hold."""
        if self._trecqa_distinct is None:
            self._trecqa_distinct = len(set(self.trecqa()[1]))
        return self._trecqa_distinct

    def describe(self, scenario: str) -> str:
        if scenario == "real20":
            claims, docs, _, _ = self.scifact()
            words = statistics.mean(len(t.split()) for t in docs.values())
            how = ("BM25 top 20 (bm25s over title+text)" if self.real20_pool == "bm25"
                   else "judged-relevant + random corpus docs")
            return (f"real20: {len(claims)} SciFact test claims x 20 abstracts ({how}; title+text cut to "
                    f"{REAL20_WORDS} words, corpus mean {words:.0f} words)")
        questions, pool = self.trecqa()
        return (f"short100: {len(questions)} TrecQA questions x 100 sentences (own candidates, filled from a "
                f"pool of {len(pool)}; mean {statistics.mean(len(t.split()) for t in pool):.0f} words)")


def real20(rng: random.Random, data: TextData) -> tuple[str, list[str]]:
    claims, docs, lists, all_ids = data.scifact()
    qid, query = rng.choice(claims)
    ids = list(lists[qid])[:REAL20_DOCS]
    if len(ids) < REAL20_DOCS:  # random pool (or a short BM25 list): fill with random distinct docs
        have = set(ids)
        while len(ids) < REAL20_DOCS:
            d = rng.choice(all_ids)
            if d not in have:
                have.add(d)
                ids.append(d)
        rng.shuffle(ids)
    return query, [docs[d] for d in ids]


def short100(rng: random.Random, data: TextData, n: int = SHORT100_DOCS) -> tuple[str, list[str]]:
    questions, pool = data.trecqa()
    query, own = rng.choice(questions)
    texts = own[:n]
    have = set(texts)
    if data.trecqa_distinct() < n:  # the fill below would never end
        raise ValueError(f"{n} sentences per request, but the TrecQA files hold only {data.trecqa_distinct()} "
                         f"distinct ones")
    while len(texts) < n:  # pool candidates across questions
        t = rng.choice(pool)
        if t not in have:
            have.add(t)
            texts.append(t)
    rng.shuffle(texts)  # the files list positives first
    return query, texts


def short10(rng: random.Random, data: TextData) -> tuple[str, list[str]]:
    """A request too small to fill a forward pass alone (one packed sequence of ~10 sentences)."""
    return short100(rng, data, SHORT10_DOCS)


SCENARIOS = {"real20": real20, "short100": short100, "short10": short10}


# ------------------------------------------------------------------------------------------- APIs
def _cohere_count(body) -> int:
    return len(body["results"])


# api -> (path, body(query, docs), number of results in a 200 response)
APIS = {
    "v2": ("/v2/rerank", lambda q, d: {"model": "m", "query": q, "documents": d}, _cohere_count),
    "v1": ("/v1/rerank", lambda q, d: {"query": q, "documents": d}, _cohere_count),
    "tei": ("/rerank", lambda q, d: {"query": q, "texts": d}, len),
    "infinity": ("/rerank", lambda q, d: {"model": "m", "query": q, "documents": d, "return_documents": False},
                 _cohere_count),
}


# ------------------------------------------------------------------------------------- processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """A process and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(children.get(p, []))
    return out


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants."""
    total = 0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def gliclass_command(model: str, kind: str, port: int, extra: list[str], device: str = "cpu",
                     dtype: str = "float32") -> list[str]:
    cmd = [sys.executable, "-m", "gliclass_rerank.server.cli", "--model", model, "--device", device,
           "--dtype", dtype, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
           "--max-queue-tokens", "10000000", "--max-queue-requests", "100000", *extra]
    if kind.endswith("nobatch"):
        cmd.append("--no-batching")
    if kind == "ray2":
        cmd += ["--ray", "--replicas", "2", "--num-cpus", "1"]
    if kind.startswith("ray1"):  # one replica: Ray Serve's @serve.batch against our own batcher
        cmd += ["--ray", "--replicas", "1", "--num-cpus", "2"]
    return cmd


def infinity_command(python: str, model_dir: str, port: int, extra: list[str]) -> list[str]:
    """infinity-emb 0.0.7x `v2` CLI (flags checked with `-m infinity_emb.cli v2 --help`)."""
    return [python, "-m", "infinity_emb.cli", "v2", "--model-id", model_dir, "--host", "127.0.0.1",
            "--port", str(port), "--engine", "torch", "--device", "cpu", "--dtype", "float32",
            "--no-compile", "--no-vector-disk-cache", "--log-level", "warning", *extra]


INFINITY_ENV = {"DO_NOT_TRACK": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0", "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


class ServerProcess:
    """A server subprocess on a free loopback port; its stderr goes to a temporary file (never a pipe
    that nobody reads, which would block a chatty server)."""

    def __init__(self, kind: str, api: str, command, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.kind, self.api = kind, api
        self.cmd = command(self.port)
        self.log = tempfile.TemporaryFile(mode="w+", prefix=f"serve_load_{kind}_")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=self.log, text=True,
                                     start_new_session=True, env={**os.environ, **(env or {})})
        self.peak_rss = 0

    def log_tail(self, n: int = 3000) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-n:]

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited ({self.proc.returncode}); command: "
                                   f"{shlex.join(self.cmd)}\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.kind} server not ready after {timeout}s\n{self.log_tail()}")

    def sample_rss(self) -> None:
        self.peak_rss = max(self.peak_rss, tree_rss_bytes(self.proc.pid))

    def stop(self) -> None:
        """SIGTERM the server, then kill whatever of ITS process tree is left (Ray daemons)."""
        tree = descendants(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        time.sleep(1)
        for p in tree[1:]:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        self.log.close()


def throughput_ratios(results: list[dict], scenarios: list[str]) -> list[str]:
    """`# <scenario>: batching on/off throughput = R x (median of N rounds; min-max of each)` lines: the
    batch server's median throughput over the other's, with each side's min/median/max req/s."""
    lines = []
    for sc in scenarios:
        rates: dict[str, list[float]] = {}
        for r in results:
            if r["scenario"] == sc:
                rates.setdefault(r["server"], []).append(r["throughput_rps"])
        for other, what in (("nobatch", "batching on/off"), ("infinity", "batch vs infinity")):
            if rates.get("batch") and rates.get(other) and statistics.median(rates[other]):
                on, off = spread(rates["batch"], 2), spread(rates[other], 2)
                lines.append(f"# {sc}: {what} throughput = {on['median'] / off['median']:.2f}x "
                             f"(req/s median [min-max] over {on['n']} / {off['n']} rounds: "
                             f"{on['median']} [{on['min']}-{on['max']}] vs {off['median']} [{off['min']}-{off['max']}])")
    return lines


# ------------------------------------------------------------------------------------------ load
async def run_load(url: str, scenario: str, requests: int, concurrency: int, time_cap: float, seed: int,
                   data: TextData, api: str = "v2", sampler=None, rate: float | None = None,
                   api_key: str | None = None) -> dict:
    rng = random.Random(seed)
    make = SCENARIOS[scenario]
    payloads = [make(rng, data) for _ in range(requests)]  # built (and the data loaded) before the clock
    path, body, count = APIS[api]
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    next_i = 0
    t_start = time.perf_counter()
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def worker(client: httpx.AsyncClient):
        nonlocal next_i
        while True:
            if time.perf_counter() - t_start > time_cap or next_i >= len(payloads):
                return
            i = next_i
            next_i += 1
            if rate:  # fixed arrival schedule (soak)
                delay = t_start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            q, docs = payloads[i]
            t0 = time.perf_counter()
            try:
                r = await client.post(path, json=body(q, docs), headers=headers)
                key = str(r.status_code)
                if r.status_code == 200 and count(r.json()) != len(docs):
                    key = "bad-body"
            except httpx.HTTPError as e:
                key = type(e).__name__
            statuses[key] = statuses.get(key, 0) + 1
            if key == "200":
                latencies.append(time.perf_counter() - t0)

    async def sample():
        while True:
            if sampler:
                sampler()
            await asyncio.sleep(0.5)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        s = asyncio.ensure_future(sample())
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        s.cancel()
    wall = time.perf_counter() - t_start
    lat = sorted(latencies)

    def pct(p):
        return round(lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1000, 1) if lat else None

    ok = statuses.get("200", 0)
    return {"scenario": scenario, "api": api, "sent": sum(statuses.values()), "ok": ok,
            "errors": sum(v for k, v in statuses.items() if k != "200"), "statuses": statuses,
            "wall_s": round(wall, 2), "throughput_rps": round(ok / wall, 2) if wall else 0,
            "docs_per_s": round(ok * len(payloads[0][1]) / wall, 1) if wall and payloads else 0,
            "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99),
            "mean_ms": round(statistics.mean(lat) * 1000, 1) if lat else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None,
                    help="GLiClass checkpoint folder (default: a tiny random checkpoint built in a temp folder)")
    ap.add_argument("--servers", nargs="+", default=None, choices=["batch", "nobatch", "ray2", "ray1", "ray1-nobatch", "infinity"],
                    help="server configurations to start, in order (default: batch nobatch ray2, plus "
                         "infinity when --infinity-python is given)")
    ap.add_argument("--scenarios", nargs="+", default=["real20", "short100"], choices=list(SCENARIOS),
                    help="workloads (default: both)")
    ap.add_argument("--requests", type=int, default=160, help="requests per (server, scenario) (default 160)")
    ap.add_argument("--concurrency", type=int, default=32, help="concurrent clients (default 32)")
    ap.add_argument("--time-cap", type=float, default=90.0,
                    help="seconds per (server, scenario); clients stop sending after it (default 90)")
    ap.add_argument("--warmup", type=int, default=8,
                    help="untimed requests per (server, scenario) before the timed run (default 8)")
    ap.add_argument("--data-root", default=str(DATA_ROOT),
                    help="folder with beir_scifact/ and trecqa/ (default: the repo's ../shared/data)")
    ap.add_argument("--real20-pool", default="bm25", choices=["bm25", "random"],
                    help="real20 passages: the claim's BM25 top 20 (default; needs bm25s, else falls back to "
                         "random) or its judged-relevant abstracts plus random ones")
    ap.add_argument("--api", default="v2", choices=["v2", "v1", "tei", "infinity"],
                    help="request shape for our servers and --url: Cohere /v2/rerank (default), /v1/rerank, "
                         "TEI /rerank, or infinity's /rerank (the infinity server kind always uses infinity)")
    ap.add_argument("--url", default=None, help="load an already running server instead (no RSS); see --api")
    ap.add_argument("--infinity-python", default=None,
                    help="python of a virtualenv with infinity-emb[server,torch]: adds the 'infinity' server")
    ap.add_argument("--infinity-model", default=None,
                    help="sentence-transformers CrossEncoder folder for infinity (default: a random-weight one "
                         "on --model's backbone, built by benchmarks/quality/make_ce_folder.py into a temp folder)")
    ap.add_argument("--infinity-args", default="",
                    help="extra flags for `infinity_emb.cli v2`, one shell-quoted string, e.g. "
                         "\"--batch-size 64\"")
    ap.add_argument("--soak", type=float, default=0.0,
                    help="soak for this many seconds at --rate (real20, batch server; reports RSS drift)")
    ap.add_argument("--rate", type=float, default=5.0, help="requests per second during --soak (default 5)")
    ap.add_argument("--burst", type=int, default=0, help="send this many requests at once to a server with a "
                                                       "small queue bound; report 429s and completions")
    ap.add_argument("--device", default="cpu", help="our servers' --device (default cpu; cuda on a GPU machine)")
    ap.add_argument("--dtype", default="float32",
                    help="our servers' --dtype (default float32; auto = bf16 on GPUs that support it)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="timed runs per (server, scenario), for a min/median/max (default 1)")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--seed", type=int, default=0, help="payload seed: the same seed sends the same requests")
    args = ap.parse_args()

    servers = args.servers or (["batch", "nobatch", "ray2"] + (["infinity"] if args.infinity_python else []))
    if "infinity" in servers and not args.infinity_python:
        ap.error("the infinity server needs --infinity-python (a virtualenv with infinity-emb[server,torch])")
    data = TextData(args.data_root, args.real20_pool)

    print(machine_header(seed=args.seed), flush=True)
    for sc in (["real20"] if args.soak else ["short100"] if args.burst else args.scenarios):
        print(f"# {data.describe(sc)}", flush=True)  # loads the data (once) before any server starts
    model = args.model
    if model is None and args.url is None:
        from gliclass_rerank.testing import tiny_checkpoint

        model = str(tiny_checkpoint(Path(tempfile.mkdtemp(prefix="serve_load_")) / "tiny", seed=0))
        print(f"# model: tiny random checkpoint at {model}", flush=True)
    results = []

    def record(r: dict) -> None:
        r["real20_pool"] = data.real20_pool if r["scenario"] == "real20" else None
        results.append(r)
        print(json.dumps(r), flush=True)

    if args.url:
        for sc in args.scenarios:
            r = asyncio.run(run_load(args.url, sc, args.requests, args.concurrency, args.time_cap, args.seed,
                                     data, api=args.api))
            r["server"] = args.url
            record(r)
    elif args.soak:
        srv = ServerProcess("batch", args.api, lambda port: gliclass_command(model, "batch", port, []))
        try:
            srv.wait_ready()
            rss = []

            def sampler():
                srv.sample_rss()
                rss.append((round(time.time()), tree_rss_bytes(srv.proc.pid)))

            n = int(args.soak * args.rate)
            r = asyncio.run(run_load(srv.url, "real20", n, args.concurrency, args.soak + 120, args.seed, data,
                                     api=args.api, sampler=sampler, rate=args.rate))
            q = max(1, len(rss) // 10)
            r.update(server="batch-soak", rate=args.rate, peak_rss_mb=round(srv.peak_rss / 2**20, 1),
                     rss_mb_first_tenth=round(statistics.mean(v for _, v in rss[:q]) / 2**20, 1),
                     rss_mb_last_tenth=round(statistics.mean(v for _, v in rss[-q:]) / 2**20, 1))
            record(r)
        finally:
            srv.stop()
    elif args.burst:
        srv = ServerProcess("batch", args.api,  # a small queue bound
                            lambda port: gliclass_command(model, "batch", port, ["--max-queue-tokens", "20000"]))
        try:
            srv.wait_ready()
            r = asyncio.run(run_load(srv.url, "short100", args.burst, args.burst, args.time_cap, args.seed, data,
                                     api=args.api, sampler=srv.sample_rss))
            r.update(server="batch-burst(max_queue_tokens=20000)", peak_rss_mb=round(srv.peak_rss / 2**20, 1))
            record(r)
        finally:
            srv.stop()
    else:
        ce_model = args.infinity_model
        for kind in servers:
            if kind.startswith("ray"):
                try:
                    import ray  # noqa: F401
                except ImportError:
                    print(f"# {kind} skipped: ray[serve] not installed", flush=True)
                    continue
            if kind == "infinity":
                if ce_model is None:
                    from ..quality.make_ce_folder import make_ce_folder

                    ce_model = str(make_ce_folder(model, Path(tempfile.mkdtemp(prefix="serve_load_ce_")) / "ce"))
                    print(f"# infinity model: random-weight CrossEncoder on {model}'s backbone at {ce_model}",
                          flush=True)
                extra = shlex.split(args.infinity_args)
                srv = ServerProcess(kind, "infinity",
                                    lambda port, m=ce_model, x=extra: infinity_command(args.infinity_python, m, port, x),
                                    env=INFINITY_ENV)
            else:
                srv = ServerProcess(kind, args.api, lambda port, kind=kind: gliclass_command(model, kind, port, [], args.device,
                                                                                      args.dtype))
            try:
                t0 = time.time()
                srv.wait_ready()
                print(f"# {kind}: ready in {time.time() - t0:.1f}s", flush=True)
                for sc in args.scenarios:
                    asyncio.run(run_load(srv.url, sc, args.warmup, min(args.warmup, args.concurrency), 60,
                                         args.seed + 1, data, api=srv.api))
                    for round_ in range(args.rounds):  # the same payloads each round
                        r = asyncio.run(run_load(srv.url, sc, args.requests, args.concurrency, args.time_cap,
                                                 args.seed, data, api=srv.api, sampler=srv.sample_rss))
                        r.update(server=kind, round=round_, peak_rss_mb=round(srv.peak_rss / 2**20, 1))
                        record(r)
            finally:
                srv.stop()
        # summary table
        print("\n| server | scenario | requests ok/sent | errors | throughput (req/s) | docs/s | p50 ms | p95 ms | "
              "p99 ms | peak RSS MB |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in results:
            print(f"| {r['server']} | {r['scenario']} | {r['ok']}/{r['sent']} | {r['errors']} | "
                  f"{r['throughput_rps']} | {r['docs_per_s']} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | "
                  f"{r['peak_rss_mb']} |")
        for line in throughput_ratios(results, args.scenarios):
            print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if all(r["errors"] == 0 for r in results if "burst" not in r["server"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
