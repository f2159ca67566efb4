"""Server limits shared by the app and the `serve` command (kept light: `serve --help` imports only this)."""

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
