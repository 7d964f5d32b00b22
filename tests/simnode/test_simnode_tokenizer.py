"""The deterministic tokenizer: exact counts, stable replies, consistent ids."""

from __future__ import annotations

import pytest

from simnode.tokenizer import (
    VOCABULARY,
    chat_prompt_ids,
    chat_prompt_tokens,
    completion_prompt_ids,
    completion_prompt_tokens,
    count_text,
    decode_ids,
    generate_text,
    generate_tokens,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello, world!", 4),
        ("", 0),
        ("   ", 0),
        ("a-b", 3),
        ("don't", 3),
        ("héllo wörld", 2),
        ("x_y 42", 2),
        ("...", 3),
    ],
)
def test_count_text_counts_words_and_punctuation(text: str, expected: int) -> None:
    assert count_text(text) == expected


def test_chat_prompt_tokens_adds_per_message_and_template_overhead() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},  # 3 tokens
        {"role": "user", "content": "Hello, world!"},  # 4 tokens
    ]
    assert chat_prompt_tokens(messages) == (4 + 3) + (4 + 4) + 3
    assert chat_prompt_tokens([]) == 3


def test_chat_prompt_tokens_reads_null_and_text_parts() -> None:
    messages = [
        {"role": "assistant", "content": None},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "two words"},
                {"type": "image_url", "image_url": {"url": "http://x/y.png"}},
                {"type": "text", "text": "three more words"},
            ],
        },
    ]
    assert chat_prompt_tokens(messages) == 4 + (4 + 5) + 3


@pytest.mark.parametrize("content", [42, {"text": "x"}, ["bare string"]])
def test_chat_prompt_tokens_rejects_malformed_content(content: object) -> None:
    with pytest.raises(ValueError):
        chat_prompt_tokens([{"role": "user", "content": content}])


def test_completion_prompt_tokens_adds_bos() -> None:
    assert completion_prompt_tokens("Hello, world!") == 5
    assert completion_prompt_tokens("") == 1


def test_generate_tokens_is_deterministic_words_from_the_vocabulary() -> None:
    tokens = generate_tokens("a prompt", 200)
    assert tokens == generate_tokens("a prompt", 200)
    assert len(tokens) == 200
    assert all(t.startswith(" ") and t[1:] in VOCABULARY for t in tokens)
    assert count_text("".join(tokens)) == 200
    assert generate_tokens("a prompt", 7) == tokens[:7]
    assert generate_tokens("another prompt", 200) != tokens
    assert generate_tokens("a prompt", 0) == []
    assert generate_text("a prompt", 3) == "".join(tokens[:3])


def test_ids_match_counts_and_generated_text_decodes() -> None:
    messages = [{"role": "user", "content": "Hello, world!"}]
    assert len(chat_prompt_ids(messages)) == chat_prompt_tokens(messages)
    ids = completion_prompt_ids("Hello, world!")
    assert len(ids) == completion_prompt_tokens("Hello, world!")
    assert len(completion_prompt_ids("Hello", add_special_tokens=False)) == 1
    reply = generate_text("seed", 12)
    assert decode_ids(completion_prompt_ids(reply)) == reply.strip()
    assert decode_ids(completion_prompt_ids("zebra crossing")) == "zebra crossing"
