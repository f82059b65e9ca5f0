"""Who may do what: scoped API keys (``infer``, ``label``, ``admin``), projects and per-key limits.

Keys live hashed in the log database (``keys.KeyStore``, managed by ``llmloop keys``); each server
keeps a copy it refreshes every few seconds (``keyring.KeyRing``); routes declare the scope they
need with ``deps.require_scope``; ``ratelimit.RateLimiter`` admits requests per key.
"""
