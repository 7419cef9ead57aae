"""The one error type of the API: every failure a client can cause or see is an ``ApiError``."""


class ApiError(Exception):
    """An HTTP answer other than success: ``status``, a snake_case ``code`` and a message that
    says what was wrong and what is allowed. ``headers`` go on the response (``Retry-After``)."""

    def __init__(self, status, code, message, headers=None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = dict(headers or {})

    def body(self):
        return {"error": {"code": self.code, "message": self.message}}


def bad_request(code, message):
    return ApiError(400, code, message)


def unavailable(code, message, retry_after=5):
    """503: a model or a worker is not available now; the client may retry."""
    return ApiError(503, code, f"{message} This is temporary: retry in {retry_after} s.",
                    {"Retry-After": str(retry_after)})
