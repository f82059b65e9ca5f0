"""Headers that tell browsers what not to do with our responses: never sniff a content type
(every response), and for the labelling UI never run scripts or styles from elsewhere, never
show it in a frame (clickjacking), never send its URLs to other sites."""

EVERY_RESPONSE = [(b"x-content-type-options", b"nosniff")]
UI_PAGES = [
    # The UI has no inline script or style (tests/serve/auth/test_sessions.py holds it to that).
    (b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),  # frame-ancestors for browsers that predate it
    (b"referrer-policy", b"no-referrer"),
]
UI_PREFIX = "/ui"


class SecurityHeadersMiddleware:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        extra = EVERY_RESPONSE + (
            UI_PAGES if path == UI_PREFIX or path.startswith(UI_PREFIX + "/") else []
        )

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                missing = [(n, v) for n, v in extra if n not in names]
                message = message | {"headers": [*message.get("headers", []), *missing]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
