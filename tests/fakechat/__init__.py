"""A local imitation of ChatGPT's web page, for driving the bridge with real Chromium in tests."""

from .server import FakeChat, ReceivedPrompt, Responder

__all__ = ["FakeChat", "ReceivedPrompt", "Responder"]
