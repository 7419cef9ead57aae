"""The WSGI app: HTTP in, HTTP out. The same app runs locally and behind API Gateway.

``create_app`` puts the parts together: the routes of ``docs/api.md`` (:mod:`imgapi.routes`), what every
request goes through (:mod:`imgapi.hooks`: the one error mapping, headers, logs), the inference slots
(:mod:`imgapi.admission`), and the process-wide settings (:func:`set_up_process`).
"""
import gc

import torch

# torch leaves a great many objects to the cyclic garbage collector, and every collection walks them all:
# the collections that Flask's import triggers (its typing annotations compile strings) are most of that
# import's time (docs/performance.md). Frozen, they are never walked again. Reference counting still frees
# them; only a reference cycle among frozen objects would outlive its use, and these are module-level objects.
# This is the one process-wide change made at import, because it must come before Flask's; the others are
# in set_up_process.
gc.freeze()

from flask import Flask  # noqa: E402

from imgapi import engine, hooks  # noqa: E402
from imgapi.admission import Admission  # noqa: E402
from imgapi.config import Config  # noqa: E402
from imgapi.hooks import DRAIN_LIMIT_BYTES  # noqa: E402 (the server sizes its buffers with it)
from imgapi.routes import STATIC, api  # noqa: E402
from imgapi.store import ModelStore  # noqa: E402
from imgapi.styles import UniversalStyles  # noqa: E402

__all__ = ["create_app", "set_up_process", "DRAIN_LIMIT_BYTES"]


def create_app(config=None, store=None):
    """The Flask app. ``config`` defaults to ``Config.from_env()``; ``store`` to a ``ModelStore``."""
    config = config or Config.from_env()
    store = store or ModelStore(config)
    app = Flask(__name__, static_folder=str(STATIC), static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.extensions["imgapi"] = {
        "config": config, "store": store,
        "admission": Admission(config.max_concurrent, config.max_queue, config.queue_timeout_s),
        "universal": UniversalStyles(store),
    }
    app.register_blueprint(api)
    hooks.install(app)
    set_up_process(config)
    return app


def set_up_process(config):
    """Every process-wide setting the server makes, besides the import-time ``gc.freeze`` above:
    torch's intra-op threads (``TORCH_THREADS``); glibc keeping freed memory for the next forward
    (:func:`imgapi.engine.keep_freed_memory`); and the objects alive now (the app's own, long-lived)
    frozen out of the cyclic garbage collector, so that collections during requests skip them."""
    torch.set_num_threads(config.torch_threads)
    engine.keep_freed_memory()
    gc.freeze()
