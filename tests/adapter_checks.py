"""Checks the three framework adapters' suites share: the event loop kept running, a slow model load, the
READMEs' option tables, the adapters' code size against their frameworks' reference rerankers, and bi-encoder
checkpoints (scores as the core's, a passage store named by `passage_store`)."""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import io
import re
import threading
import time
import tokenize
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest

from gliclass_rerank import GLiClassReranker

ROOT = Path(__file__).resolve().parents[1]
READMES = {name: ROOT / "integrations" / name / "README.md" for name in ("llama-index", "langchain", "haystack")}
# Options all three adapters have; their README rows must say the same words (top_k is Haystack's top_n).
SHARED_OPTIONS = ("model", "top_n", "score_threshold", "mode", "device", "dtype", "token", "batch_size",
                  "passages_per_pass", "max_length", "passage_store", "model_kwargs")
LONG_TEXT = "rain falls from clouds " * 400  # far over any sequence's budget: scored on its beginning only
# Options each adapter refuses when it is built (not at first use), with what the error must name.
BAD_OPTIONS = [
    ({"model_kwargs": {"device": "cpu"}}, r"model_kwargs\['device'\] repeats the 'device' option"),
    ({"model_kwargs": {"token": "hf_x"}}, r"model_kwargs\['token'\] repeats the 'token' option"),
    ({"model_kwargs": {"revison": "v1"}}, r"model_kwargs\['revison'\] is not an argument"),
    ({"mode": "pointwise"}, "mode"),
    ({"score_threshold": 1.5}, "score_threshold"),
    ({"score_threshold": -0.1}, "score_threshold"),
    ({"batch_size": 0}, "batch_size=0"),
    ({"passages_per_pass": 0}, "passages_per_pass=0"),
    ({"max_length": 0}, "max_length=0"),
    ({"model_kwargs": {"passage_store": "memory://"}}, r"model_kwargs\['passage_store'\] repeats"),
    ({"passage_store": "vectors.db"}, r"passage store 'vectors.db': expected a URI"),
    ({"passage_store": "postgres://db/vectors"}, r"passage store 'postgres://db/vectors': unknown scheme"),
    ({"passage_store": "sqlite://"}, r"sqlite://: no file path"),
    ({"passage_store": "sqlite:///no/such/dir/v.db?fp16=maybe"}, r"sqlite:///no/such/dir/v.db\?fp16=maybe: fp16="),
    ({"passage_store": "redis://cache:6379/0?timeout=-1"}, r"redis://cache:6379/0\?timeout=-1: timeout='-1'"),
]
# Loading options as an adapter takes them, and the from_pretrained call they must become.
STORE = "memory://?max_bytes=4096"
LOADING_OPTIONS = {"batch_size": 8, "passages_per_pass": 4, "max_length": 128, "passage_store": STORE,
                   "model_kwargs": {"revision": "v1"}}
LOADED_WITH = {"name": "org/model", "batch_size": 8, "passages_per_pass": 4, "max_length": 128,
               "passage_store": STORE, "revision": "v1"}
# Texts the bi-encoder checks rerank (the tiny checkpoints' scores are noise: only equality is checked).
BI_QUERY = "which team won the football championship"
BI_TEXTS = ["The football team won the championship.", "She baked a chocolate cake.", "Interest rates rose.",
            "The match ended after a penalty shootout."]


def run_ticking(make: Callable[[], Awaitable[Any]]) -> tuple[Any, int]:
    """Await `make()` on a fresh loop beside a 10 ms ticker: (its result, how often the loop ticked meanwhile)."""

    async def main() -> tuple[Any, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        try:
            result = await make()
        finally:
            task.cancel()
        return result, ticks

    return asyncio.run(main())


def slow_loading(monkeypatch, seconds: float = 0.5) -> list[int]:
    """Make `GLiClassReranker.from_pretrained` sleep first; returns the ids of the threads that loaded."""
    original = GLiClassReranker.from_pretrained.__func__
    threads: list[int] = []

    def slow(cls, *args, **kwargs):
        threads.append(threading.get_ident())
        time.sleep(seconds)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(GLiClassReranker, "from_pretrained", classmethod(slow))
    return threads


def recorded_loads(monkeypatch, returns: GLiClassReranker) -> list[dict[str, Any]]:
    """Replace `from_pretrained` by a recorder returning `returns`; the list gets each call's arguments."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(
        GLiClassReranker, "from_pretrained",
        classmethod(lambda cls, name, **kwargs: calls.append({"name": str(name), **kwargs}) or returns),
    )
    return calls


def check_options(build: Callable[..., Any], core: GLiClassReranker, monkeypatch, load: Callable[[Any], Any]) -> Any:
    """An adapter class refuses `BAD_OPTIONS` and loading options beside a loaded model when it is built, and
    passes `LOADING_OPTIONS` on to `from_pretrained` when `load(adapter)` loads; returns that adapter."""
    for options, message in BAD_OPTIONS:
        with pytest.raises(ValueError, match=message):
            build(model="org/model", **options)
    with pytest.raises(ValueError, match="batch_size"):
        build(model=core, batch_size=8)  # a loaded model keeps its own
    with pytest.raises(ValueError, match="passage_store"):
        build(model=core, passage_store=STORE)  # and its own store
    adapter = build(model="org/model", **LOADING_OPTIONS)
    for name in ("HF_TOKEN", "HF_API_TOKEN"):  # Haystack's default token reads these when loading
        monkeypatch.delenv(name, raising=False)
    calls = recorded_loads(monkeypatch, core)
    load(adapter)
    assert [{k: v for k, v in call.items() if v is not None} for call in calls] == [LOADED_WITH]
    return adapter


def assert_same_ranking(pairs: list[tuple[str, float]], expected: list[tuple[str, float]]) -> None:
    """The same ids in the same order, with scores equal up to float noise (another load of the same weights)."""
    assert [i for i, _ in pairs] == [i for i, _ in expected]
    assert [s for _, s in pairs] == pytest.approx([s for _, s in expected], rel=1e-5)


def core_ranking(folder: str | Path) -> list[tuple[str, float]]:
    """(text, score) of `BI_TEXTS` as `GLiClassReranker` ranks them for `BI_QUERY`, best first."""
    core = GLiClassReranker.from_pretrained(folder, device="cpu", dtype="float32")
    return [(BI_TEXTS[r.index], r.score) for r in core.rerank(BI_QUERY, BI_TEXTS)]


def check_passage_store(
    build: Callable[..., Any], rerank: Callable[[Any], list[tuple[str, float]]], folder: Path, tmp_path: Path,
) -> None:
    """`passage_store` reaches the reranker an adapter loads: `build(model=..., device=..., dtype=...,
    passage_store=...)` builds an adapter returning all results, `rerank(adapter)` ranks `BI_TEXTS` for
    `BI_QUERY` as (text, score) pairs and `adapter.reranker` is the loaded core reranker.

    After a first adapter reranks, the SQLite file holds one vector per passage; a second adapter (another
    model load) on the same URI finds every passage there; a store that cannot be opened is named by its URI
    when the model loads."""
    from gliclass_rerank.vector_stores import StoreError, open_store

    uri = f"sqlite://{tmp_path}/vectors.db"
    first = build(model=str(folder), device="cpu", dtype="float32", passage_store=uri)
    assert not (tmp_path / "vectors.db").exists()  # checked when built, opened when the model loads
    ranking = rerank(first)
    assert_same_ranking(ranking, core_ranking(folder))
    assert first.reranker.passage_cache_stats()["misses"] == len(BI_TEXTS)
    assert len(open_store(uri)) == len(BI_TEXTS)

    second = build(model=str(folder), device="cpu", dtype="float32", passage_store=uri)
    assert_same_ranking(rerank(second), ranking)
    assert second.reranker is not first.reranker
    assert {k: second.reranker.passage_cache_stats()[k] for k in ("hits", "misses")} == {
        "hits": len(BI_TEXTS), "misses": 0}

    missing = f"sqlite://{tmp_path}/no-such-folder/vectors.db"
    adapter = build(model=str(folder), device="cpu", dtype="float32", passage_store=missing)
    with pytest.raises(StoreError, match=re.escape(f"passage store {missing}: cannot open")):
        rerank(adapter)


def readme_options(adapter: str) -> list[tuple[str, str]]:
    """(option, meaning) rows of the options table in an adapter's README, in order."""
    rows, inside = [], False
    for line in READMES[adapter].read_text().splitlines():
        if line.startswith("| option |"):
            inside = True
        elif inside and line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows.append((cells[0].strip("`"), cells[-1]))
        elif inside and not line.startswith("|"):
            break
    return rows


def check_readme(adapter: str, options: list[str]) -> None:
    """The README lists exactly `options`, in this order, and words the shared ones as the others do."""
    rows = readme_options(adapter)
    assert [name for name, _ in rows] == options
    meaning = {name.replace("top_k", "top_n"): text for name, text in rows}
    for other in READMES:
        theirs = {name.replace("top_k", "top_n"): text for name, text in readme_options(other)}
        for name in SHARED_OPTIONS:
            assert meaning[name] == theirs[name], f"{adapter} and {other} describe {name} differently"


def code_lines(path: str | Path) -> int:
    """Lines of code in a Python file: not blank, not only a comment, not part of a docstring."""
    source = Path(path).read_text()
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        for statement in getattr(node, "body", None) if isinstance(getattr(node, "body", None), list) else []:
            # module, class and function docstrings, and the attribute docstrings under fields
            if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant) and isinstance(
                statement.value.value, str
            ):
                docstrings.update(range(statement.lineno, statement.end_lineno + 1))
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in skip:
            lines.update(range(token.start[0], token.end[0] + 1))
    return len(lines - docstrings)


def reference_file(module: str) -> Path | None:
    """The source file of a framework's module, or None where that package is not installed."""
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        return None
    return Path(spec.origin) if spec and spec.origin else None


def adapter_file(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    assert spec and spec.origin
    return Path(spec.origin)
