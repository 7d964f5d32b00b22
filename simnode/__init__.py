"""A simulated GPU node that speaks vLLM's OpenAI-compatible server API.

Used for development, tests and benchmarks in place of a real vLLM server: same routes,
same JSON and SSE shapes, a deterministic tokenizer (:mod:`simnode.tokenizer`), pacing,
and fault injection switchable at runtime through ``/sim/faults``.
"""

from simnode.app import create_app
from simnode.config import Faults, SimConfig

__all__ = ["Faults", "SimConfig", "create_app"]
