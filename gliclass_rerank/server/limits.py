"""Server limits shared by the app and the `serve` command (kept light: `serve --help` imports only this)."""

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
# Unfinished requests are answered (503) this long before the graceful-shutdown period ends, so their answers
# are written before uvicorn closes the connections at the end of the period.
SHUTDOWN_MARGIN_S = 0.5
# Connection settings (uvicorn's own options; see docs/serving.md "Connections").
DEFAULT_LIMIT_CONCURRENCY = 512
DEFAULT_TIMEOUT_KEEP_ALIVE = 5
DEFAULT_BACKLOG = 2048
DEFAULT_H11_MAX_INCOMPLETE_EVENT_SIZE = 16 * 1024
