"""What a reply sends the model: the system prompt and the newest turns that fit."""

from __future__ import annotations

from types import SimpleNamespace

from edge.chat.replies import build_context, estimate_tokens


def message(role: str, text: str, author: str = "ada") -> SimpleNamespace:
    return SimpleNamespace(role=role, content=text, author=author)


def test_one_person_keeps_plain_turns_and_the_system_prompt() -> None:
    history = [message("user", "hi"), message("assistant", "hello"), message("user", "how?")]
    assert build_context(history, "Be brief.", 1000) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "how?"},
    ]


def test_several_people_are_named() -> None:
    history = [message("user", "hi", "ada"), message("user", "yo", "bob")]
    turns = build_context(history, "", 1000)
    assert [t["content"] for t in turns] == ["ada: hi", "bob: yo"]


def test_old_turns_are_dropped_to_fit_and_the_last_always_stays() -> None:
    long = "word " * 300
    history = [message("user", long), message("assistant", long), message("user", "last?")]
    budget = estimate_tokens(long) + estimate_tokens("last?")
    turns = build_context(history, "", budget)
    assert [t["role"] for t in turns] == ["assistant", "user"]
    assert build_context(history, "", 1)[-1]["content"] == "last?"


def test_empty_replies_are_left_out() -> None:
    history = [message("user", "a"), message("assistant", ""), message("user", "b")]
    assert [t["content"] for t in build_context(history, "", 100)] == ["a", "b"]
