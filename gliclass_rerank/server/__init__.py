"""The rerank server (extra ``gliclass-rerank[server]``): Cohere- and TEI-compatible endpoints.

Imported only by ``gliclass-rerank serve`` (and by users who build the app themselves); the core
library never imports FastAPI, uvicorn or Ray.

    >>> from gliclass_rerank import GLiClassReranker
    >>> from gliclass_rerank.server import create_app
    >>> app = create_app(GLiClassReranker.from_pretrained("knowledgator/gliclass-edge-v3.0"))
"""

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): `gliclass-rerank serve --help` must not import FastAPI, torch and the model code.
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
