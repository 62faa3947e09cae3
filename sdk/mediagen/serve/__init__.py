"""`mediagen serve`: any backend as a Replicate- and OpenAI-compatible HTTP service.

Imported only when the command runs (or by an app that hosts the server itself): `import mediagen`
never loads it. Needs the `serve` extra (`pip install 'mediagen[serve]'`).

Examples:
    >>> from mediagen.serve import ServeSettings, ServedModel, create_app
    >>> settings = ServeSettings(models=[ServedModel(owner="acme", name="sd", model="diffusers:/models/sd")],
    ...                          db="/var/lib/mediagen/predictions.db")
    >>> app = create_app(settings)  # an ASGI app: uvicorn, Ray Serve, any ASGI server  # doctest: +SKIP
"""

from __future__ import annotations

try:
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("mediagen serve needs its extra: pip install 'mediagen[serve]'") from exc

from .app import ServeState, create_app
from .runner import BindRefused, check_bind, serve
from .settings import ENV_TOKEN, ServedModel, ServeSettings, TokenSpec, load_token_file, parse_model_spec
from .webhooks import sign as sign_webhook

__all__ = [
    "ENV_TOKEN",
    "BindRefused",
    "ServeSettings",
    "ServeState",
    "ServedModel",
    "TokenSpec",
    "check_bind",
    "create_app",
    "load_token_file",
    "parse_model_spec",
    "serve",
    "sign_webhook",
]
