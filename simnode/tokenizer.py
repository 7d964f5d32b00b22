"""A deterministic stand-in for a model's tokenizer and sampler.

Tests and benchmarks must predict token counts exactly, so the rule is a plain regex
rather than a real vocabulary:

* a text has one token per match of ``\\w+|[^\\w\\s]`` ("Hello, world!" is 4 tokens);
* a chat prompt costs ``4 + count_text(content)`` per message plus 3 for the template;
* a completion prompt costs ``count_text(prompt) + 1`` (the BOS token);
* generated text is C words, each with a leading space, picked from :data:`VOCABULARY`
  by a stable hash of the prompt, so the same request always gets the same reply and
  ``count_text(reply) == C``;
* a cross-encoder pair (rerank, score) is ``count_text(query) + count_text(document) + 3``
  (BOS, a separator, an end token, as BERT's ``[CLS] q [SEP] d [SEP]``).

Ids are below :data:`VOCAB_SIZE`; a prompt of ids outside ``[0, VOCAB_SIZE)`` is out of
the vocabulary.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "BOS_TOKEN_ID",
    "CHAT_MESSAGE_OVERHEAD",
    "CHAT_TEMPLATE_OVERHEAD",
    "PAIR_OVERHEAD",
    "VOCABULARY",
    "VOCAB_SIZE",
    "chat_prompt_ids",
    "chat_prompt_tokens",
    "chat_seed_text",
    "completion_prompt_ids",
    "completion_prompt_tokens",
    "count_text",
    "decode_ids",
    "generate_text",
    "generate_tokens",
    "is_special",
    "message_text",
    "pair_ids",
    "text_ids",
]

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")

#: Words the simulated model "samples" from; 64 of them, so one hash byte picks one word.
VOCABULARY: tuple[str, ...] = (
    "the", "of", "and", "to", "in", "is", "that", "for",
    "it", "as", "was", "with", "be", "by", "on", "not",
    "he", "this", "are", "or", "his", "from", "at", "which",
    "but", "have", "an", "had", "they", "you", "were", "their",
    "one", "all", "we", "can", "her", "has", "there", "been",
    "if", "more", "when", "will", "would", "who", "so", "no",
    "time", "people", "model", "token", "node", "light", "water", "world",
    "small", "large", "quick", "quiet", "river", "stone", "cloud", "answer",
)  # fmt: skip

#: Tokens added to each chat message by the simulated chat template (start, role, separator, end).
CHAT_MESSAGE_OVERHEAD = 4
#: Tokens the chat template adds once: BOS plus the two-token generation prompt.
CHAT_TEMPLATE_OVERHEAD = 3

#: Token id of the beginning-of-sequence token.
BOS_TOKEN_ID = 1
_START_ID = 2
_SEP_ID = 3
_END_ID = 4
_SPECIAL_PIECES = {
    BOS_TOKEN_ID: "<s>",
    _START_ID: "<|im_start|>",
    _SEP_ID: "\n",
    _END_ID: "<|im_end|>",
}
#: Vocabulary words get small fixed ids so generated text decodes without any state.
_VOCAB_BASE_ID = 100
_VOCAB_IDS = {word: _VOCAB_BASE_ID + i for i, word in enumerate(VOCABULARY)}
_HASHED_BASE_ID = 1000
_HASHED_SPAN = 150_000
#: Size of the simulated vocabulary: every id the tokenizer gives is below it.
VOCAB_SIZE = _HASHED_BASE_ID + _HASHED_SPAN
#: Tokens a cross-encoder adds around a (query, document) pair: BOS, separator, end.
PAIR_OVERHEAD = 3
#: Bound on the id -> piece memory used by :func:`decode_ids` for words outside the vocabulary.
_MAX_REMEMBERED = 65_536
_remembered: dict[int, str] = {}


def count_text(text: str) -> int:
    """Return the number of tokens in ``text``."""
    return len(_TOKEN_RE.findall(text))


def message_text(content: Any) -> str:
    """Return the text of a chat message's ``content`` (a string, null, or a list of parts).

    Raises:
        ValueError: when the content has another shape.
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, Mapping):
                raise ValueError("content parts must be objects")
            if part.get("type") == "text":
                text = part.get("text")
                if not isinstance(text, str):
                    raise ValueError("a text content part needs a string 'text'")
                texts.append(text)
        return " ".join(texts)
    raise ValueError("message content must be a string, null or a list of parts")


def _messages(messages: Sequence[Any]) -> Iterable[tuple[str, str]]:
    for message in messages:
        if not isinstance(message, Mapping):
            raise ValueError("each message must be an object")
        role = message.get("role")
        yield (role if isinstance(role, str) else ""), message_text(message.get("content"))


def chat_prompt_tokens(messages: Sequence[Any]) -> int:
    """Return the prompt tokens of a chat request: 4 per message plus its text, plus 3.

    Raises:
        ValueError: when a message or its content is malformed.
    """
    total = CHAT_TEMPLATE_OVERHEAD
    for _role, text in _messages(messages):
        total += CHAT_MESSAGE_OVERHEAD + count_text(text)
    return total


def completion_prompt_tokens(prompt: str) -> int:
    """Return the prompt tokens of a completion request: the text plus BOS."""
    return count_text(prompt) + 1


def chat_seed_text(messages: Sequence[Any]) -> str:
    """Return the text that seeds the reply to a chat request."""
    return "\n".join(f"{role}: {text}" for role, text in _messages(messages))


def _hash_bytes(seed_text: str, n: int) -> bytes:
    """Return at least ``n`` bytes derived from ``seed_text`` by chained BLAKE2b."""
    digest = hashlib.blake2b(seed_text.encode("utf-8", "surrogatepass")).digest()
    chunks = [digest]
    have = len(digest)
    while have < n:
        digest = hashlib.blake2b(digest).digest()
        chunks.append(digest)
        have += len(digest)
    return b"".join(chunks)


def generate_tokens(seed_text: str, n: int) -> list[str]:
    """Return ``n`` reply tokens (``" word"``) chosen deterministically from ``seed_text``."""
    if n <= 0:
        return []
    words = VOCABULARY
    return [" " + words[byte & 63] for byte in _hash_bytes(seed_text, n)[:n]]


def generate_text(seed_text: str, n: int) -> str:
    """Return the ``n``-token reply for ``seed_text`` as one string."""
    return "".join(generate_tokens(seed_text, n))


# Memoized: a prompt's ids are hashed on every request while the prefix cache is on,
# and prompts repeat their words (and whole prefixes).
@functools.lru_cache(maxsize=_MAX_REMEMBERED)
def _piece_id(piece: str) -> int:
    known = _VOCAB_IDS.get(piece)
    if known is not None:
        return known
    digest = hashlib.blake2b(piece.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    token_id = _HASHED_BASE_ID + int.from_bytes(digest, "little") % _HASHED_SPAN
    if len(_remembered) < _MAX_REMEMBERED:
        _remembered.setdefault(token_id, piece)
    return token_id


def text_ids(text: str) -> list[int]:
    """Return the token ids of ``text`` (no special tokens); ``len`` equals :func:`count_text`."""
    return [_piece_id(piece) for piece in _TOKEN_RE.findall(text)]


def completion_prompt_ids(prompt: str, *, add_special_tokens: bool = True) -> list[int]:
    """Return the token ids of a completion prompt, BOS first unless told otherwise."""
    ids = text_ids(prompt)
    return [BOS_TOKEN_ID, *ids] if add_special_tokens else ids


def chat_prompt_ids(messages: Sequence[Any]) -> list[int]:
    """Return the token ids of a chat prompt; ``len`` equals :func:`chat_prompt_tokens`.

    Raises:
        ValueError: when a message or its content is malformed.
    """
    ids = [BOS_TOKEN_ID]
    for role, text in _messages(messages):
        ids += [_START_ID, _piece_id(role), _SEP_ID, *text_ids(text), _END_ID]
    ids += [_START_ID, _piece_id("assistant")]
    return ids


def pair_ids(query: str, document: str) -> list[int]:
    """Return the ids of a cross-encoder pair: BOS, query, separator, document, end."""
    return [BOS_TOKEN_ID, *text_ids(query), _SEP_ID, *text_ids(document), _END_ID]


def is_special(token_id: int) -> bool:
    """Whether ``token_id`` is one of the template's special tokens (BOS, separators)."""
    return token_id in _SPECIAL_PIECES


def decode_ids(ids: Sequence[int]) -> str:
    """Return the text of token ids, as far as this process has seen them.

    Vocabulary words and special tokens always decode; other words decode only if this
    process has tokenized them before (``"<unk>"`` otherwise).
    """
    pieces = []
    for token_id in ids:
        if token_id in _SPECIAL_PIECES:
            continue
        offset = token_id - _VOCAB_BASE_ID
        if 0 <= offset < len(VOCABULARY):
            pieces.append(VOCABULARY[offset])
        else:
            pieces.append(_remembered.get(token_id, "<unk>"))
    return " ".join(pieces)
