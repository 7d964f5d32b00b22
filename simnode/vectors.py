"""Deterministic embeddings, and floats serialized the way vLLM writes float32.

A text's vector is the sum of one pseudo-random vector per token id (SHAKE-256 of the
id, so every process agrees), normalized to unit length. Texts that share words share
those tokens' vectors, so they are more similar than unrelated texts, whose vectors are
nearly orthogonal: scores and rerank orders mean something. Special tokens (BOS,
separators) are left out of the sum unless a prompt has nothing else.

The model is matryoshka-capable: ``dimensions=d`` keeps the first ``d`` components of
the sum and normalizes those.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from array import array
from collections.abc import Sequence

from simnode.tokenizer import is_special

__all__ = [
    "cosine",
    "cross_encoder_score",
    "embed_ids",
    "encode_base64",
    "float32",
    "floats_json",
    "normalize",
]

_F32 = struct.Struct("<f")
#: Pack formats of the ``embed_dtype`` values simnode encodes (bfloat16 is done by hand).
_DTYPE_FORMATS = {"float32": "f", "float16": "e"}


def _token_vector(token_id: int, dim: int) -> array[int]:
    digest = hashlib.shake_256(b"simnode-embedding:%d" % token_id).digest(2 * dim)
    vector = array("h")
    vector.frombytes(digest)
    return vector


def embed_ids(ids: Sequence[int], dim: int) -> list[float]:
    """Return the (unnormalized) sum of the token vectors of ``ids``, ``dim`` components."""
    content = [i for i in ids if not is_special(i)] or list(ids)
    total = [0] * dim
    for token_id in content:
        total = [a + b for a, b in zip(total, _token_vector(token_id, dim), strict=True)]
    return [float(x) for x in total]


def normalize(vector: Sequence[float]) -> list[float]:
    """Return ``vector`` scaled to unit length (a zero vector stays zero)."""
    norm = math.sqrt(math.fsum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else [0.0 for _ in vector]


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Return the cosine similarity of two vectors, computed in float32 like vLLM's torch."""
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    norms = math.sqrt(math.fsum(x * x for x in a)) * math.sqrt(math.fsum(y * y for y in b))
    return float32(dot / norms) if norms > 0 else 0.0


def cross_encoder_score(similarity: float, *, activation: bool = True) -> float:
    """Return the simulated cross-encoder's relevance: ``sigmoid(8 * cosine - 4)``.

    Without ``activation`` (``use_activation: false``) the logit itself.
    """
    logit = 8.0 * similarity - 4.0
    return float32(1.0 / (1.0 + math.exp(-logit)) if activation else logit)


def float32(value: float) -> float:
    """Return ``value`` rounded to the nearest float32."""
    result: float = _F32.unpack(_F32.pack(value))[0]
    return result


def _short(value: float) -> str:
    """The shortest text that reads back as the same float32, as orjson writes one."""
    for digits in (6, 7, 8):
        text = f"{value:.{digits}g}"
        if float32(float(text)) == value:
            break
    else:
        text = f"{value:.9g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        return f"{mantissa}e{int(exponent)}"
    return text if "." in text else text + ".0"


def floats_json(values: Sequence[float]) -> str:
    """Return a JSON array of ``values`` as float32, each in its shortest form."""
    return "[" + ",".join(_short(v) for v in array("f", values)) + "]"


def _bfloat16(values: Sequence[float], order: str) -> bytes:
    words = array("I")
    words.frombytes(array("f", values).tobytes())
    rounded = [((w + 0x7FFF + ((w >> 16) & 1)) >> 16) & 0xFFFF for w in words]
    return struct.pack(f"{order}{len(rounded)}H", *rounded)


def encode_base64(
    values: Sequence[float], dtype: str = "float32", endianness: str = "native"
) -> str:
    """Return ``values`` as base64 of packed floats: what the OpenAI SDK decodes.

    ``float32`` little-endian (the x86 "native") is the default, as in vLLM.
    """
    order = {"native": "=", "little": "<", "big": ">"}[endianness]
    if dtype == "bfloat16":
        packed = _bfloat16(values, order)
    else:
        packed = struct.pack(f"{order}{len(values)}{_DTYPE_FORMATS[dtype]}", *values)
    return base64.b64encode(packed).decode("ascii")
