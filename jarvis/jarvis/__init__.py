"""Jarvis: the Ironcliw assistant runtime (terminal chat, OpenAI-compatible server, memory) on Prime."""

__version__ = "2.0.0"
