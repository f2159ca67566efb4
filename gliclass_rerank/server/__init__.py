"""The rerank server (extra ``gliclass-rerank[server]``): Cohere- and TEI-compatible endpoints.

Imported only by ``gliclass-rerank serve`` (and by users who build the app themselves); the core
library never imports FastAPI, uvicorn or Ray.

    >>> from gliclass_rerank import GLiClassReranker
    >>> from gliclass_rerank.server import create_app
    >>> app = create_app(GLiClassReranker.from_pretrained("knowledgator/gliclass-edge-v3.0"))
"""

from .app import create_app

__all__ = ["create_app"]
