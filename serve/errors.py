"""The server's error hierarchy. Routes and services raise these; one handler in ``app.py`` renders
every error as OpenAI's ``{"error": {"message", "type", "param", "code"}}`` with the right status."""

from http import HTTPStatus


class APIError(Exception):
    status_code: int = HTTPStatus.INTERNAL_SERVER_ERROR
    type: str = "server_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def to_dict(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class BadRequestError(APIError):
    status_code = HTTPStatus.BAD_REQUEST
    type = "invalid_request_error"


class AuthenticationError(APIError):
    status_code = HTTPStatus.UNAUTHORIZED
    type = "authentication_error"


class PermissionDeniedError(APIError):
    """A valid key without the scope the route needs."""

    status_code = HTTPStatus.FORBIDDEN
    type = "permission_error"


class NotFoundError(APIError):
    status_code = HTTPStatus.NOT_FOUND
    type = "not_found_error"


class ConflictError(APIError):
    status_code = HTTPStatus.CONFLICT
    type = "invalid_request_error"


class RequestTooLargeError(APIError):
    status_code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    type = "invalid_request_error"


class RateLimitError(APIError):
    status_code = HTTPStatus.TOO_MANY_REQUESTS
    type = "rate_limit_error"


class OverloadedError(APIError):
    """The engine's queue is full: come back later (503 with ``Retry-After``)."""

    status_code = HTTPStatus.SERVICE_UNAVAILABLE
    type = "service_unavailable_error"


class EngineNotReadyError(OverloadedError):
    pass


class InternalServerError(APIError):
    """A genuine bug: the client gets this message, never a traceback (the log gets that)."""
