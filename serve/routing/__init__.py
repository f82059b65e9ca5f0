"""Versioned routes in the server: which version answers a request (``assign``), the routes and
the adapters they need kept current from the log database (``table``), the canary's health
judged and acted on (``watch``), and shadow traffic (``shadow``)."""
