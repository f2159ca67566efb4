"""Checks the three framework adapters' suites share: the event loop kept running, a slow model load, the
READMEs' option tables, and the adapters' code size against their frameworks' reference rerankers."""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import io
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
                  "passages_per_pass", "max_length", "model_kwargs")
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
]
# Loading options as an adapter takes them, and the from_pretrained call they must become.
LOADING_OPTIONS = {"batch_size": 8, "passages_per_pass": 4, "max_length": 128, "model_kwargs": {"revision": "v1"}}
LOADED_WITH = {"name": "org/model", "batch_size": 8, "passages_per_pass": 4, "max_length": 128, "revision": "v1"}


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
