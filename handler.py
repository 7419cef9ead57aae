"""AWS Lambda entry point: API Gateway events (REST v1 or HTTP API v2) -> the same WSGI app.

The app and its configuration are built once per container, at import (Lambda's init phase);
models load lazily on first use.
"""
import logging

import serverless_wsgi

from imgapi.app import create_app

logging.getLogger().setLevel(logging.INFO)
app = create_app()


def handler(event, context):
    return serverless_wsgi.handle_request(app, event, context)
