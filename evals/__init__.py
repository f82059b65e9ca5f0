"""Evaluation harness and serving benchmark; talks to servers only over the OpenAI HTTP API."""
