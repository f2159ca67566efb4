"""gliclass-rerank: GLiClass zero-shot classifiers as listwise and NLI rerankers.

    >>> from gliclass_rerank import GLiClassReranker
    >>> reranker = GLiClassReranker.from_pretrained("knowledgator/gliclass-edge-v3.0")
    >>> reranker.rerank("what causes rain?", ["Clouds release water ...", "The stock market ..."])
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import GLiClassConfig, UnsupportedConfigError
    from .reranker import GLiClassReranker
    from .results import RerankResult

__all__ = ["GLiClassConfig", "GLiClassReranker", "RerankResult", "UnsupportedConfigError"]
__version__ = "0.1.0"

# Imported on first use (PEP 562): `gliclass-rerank --help` and other light entry points must not pay for
# importing torch and transformers.
_LAZY = {
    "GLiClassConfig": ".config",
    "UnsupportedConfigError": ".config",
    "GLiClassReranker": ".reranker",
    "RerankResult": ".results",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
