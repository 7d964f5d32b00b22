"""What prefix an API call shares with others (:func:`edge.fleet.affinity.prefix_affinity`):
every turn of one conversation gets the same affinity, as every turn starts with the
same blocks in vLLM's prefix cache, and different conversations get different ones."""

from __future__ import annotations

from edge.fleet.affinity import PREFIX_CHARS, leading_messages, prefix_affinity, room_affinity

SYSTEM = {"role": "system", "content": "You answer in French."}


def turns(*, system: list[dict[str, str]], first: str, count: int = 4) -> list[list[dict]]:
    """The messages each turn of one conversation sends: its history so far, then a question."""
    history = [*system, {"role": "user", "content": first}]
    sent = [list(history)]
    for turn in range(1, count):
        history += [{"role": "assistant", "content": f"answer {turn}"},
                    {"role": "user", "content": f"question {turn}"}]
        sent.append(list(history))
    return sent


def test_every_turn_of_a_conversation_without_a_system_prompt_has_one_affinity() -> None:
    # The first turn is [question], the second [question, answer, question]: what they
    # share is the first question, not the first two messages.
    keys = {prefix_affinity({"messages": sent}) for sent in turns(system=[], first="Hi")}
    assert len(keys) == 1 and None not in keys


def test_every_turn_with_system_prompts_has_one_affinity_and_conversations_differ() -> None:
    developer = {"role": "developer", "content": "Be brief."}
    one = {prefix_affinity({"messages": sent})
           for sent in turns(system=[SYSTEM, developer], first="What is a prefix?")}
    other = {prefix_affinity({"messages": sent})
             for sent in turns(system=[SYSTEM, developer], first="Who built the cache?")}
    assert len(one) == 1 and len(other) == 1
    # Two system messages are not the whole key: conversations under them differ.
    assert one != other
    assert leading_messages([SYSTEM, developer, {"role": "user", "content": "q"},
                             {"role": "assistant", "content": "a"}])[-1]["content"] == "q"


def test_the_other_apis_shapes_and_an_explicit_cache_key() -> None:
    anthropic = [prefix_affinity({"system": "Be brief.", "messages": sent})
                 for sent in turns(system=[], first="Hello")]
    assert len(set(anthropic)) == 1
    responses = [prefix_affinity({"instructions": "Be brief.", "input": sent})
                 for sent in turns(system=[], first="Hello")]
    assert len(set(responses)) == 1
    assert prefix_affinity({"instructions": "Be brief.", "input": "Hello"}) is not None
    keyed = prefix_affinity({"prompt_cache_key": "agent-7", "messages": [SYSTEM]})
    assert keyed == prefix_affinity({"prompt_cache_key": "agent-7", "prompt": "other"})


def test_plain_prompts_share_their_first_kilobyte_and_token_prompts_their_first_ids() -> None:
    head = "x" * PREFIX_CHARS
    assert prefix_affinity({"prompt": head + "one"}) == prefix_affinity({"prompt": head + "two"})
    assert prefix_affinity({"prompt": "a" + head}) != prefix_affinity({"prompt": "b" + head})
    ids = list(range(300))
    assert prefix_affinity({"prompt": ids}) == prefix_affinity({"prompt": [*ids, 7, 8]})
    assert prefix_affinity({"prompt": [9, *ids]}) != prefix_affinity({"prompt": ids})


def test_calls_with_no_prefix_to_keep_have_none() -> None:
    assert prefix_affinity({"input": "embed this"}) is None
    assert prefix_affinity({"input": ["embed this", "and this"]}) is None
    assert prefix_affinity({"messages": []}) is None
    assert prefix_affinity({"prompt": [True, False]}) is None
    assert room_affinity("a") != room_affinity("b")
