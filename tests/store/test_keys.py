"""The Redis key layout: one module builds every key, and its docstring lists them all."""

from __future__ import annotations

import inspect
import re
from importlib import resources
from pathlib import Path

from edge.store import keys
from edge.store.hotstore import HotStore

ROOT = Path(__file__).resolve().parents[2]

#: Call sites allowed to build a key of the namespace by hand, as (file, what it
#: builds): none, every key is built by :mod:`edge.store.keys`. A hand-built key
#: anywhere fails the test below.
STILL_BUILT_BY_HAND: frozenset[tuple[str, str]] = frozenset()

#: An f-string, or a concatenation, that puts something called ns or namespace
#: (``ns``, ``store.ns``, ``settings.redis_namespace``) before a colon.
HAND_BUILT = re.compile(
    r"""f["'][^"'\n]*\{[^}\n]*(?:\bns|namespace)\}(:[a-z_]*:?)"""
    r"""|(?:\bns|namespace)\s*\+\s*["'](:[a-z_]*:?)""")


def builders() -> dict[str, object]:
    """The module's key builders: every public function whose first argument is ``ns``."""
    return {name: getattr(keys, name) for name in keys.__all__
            if inspect.isfunction(getattr(keys, name))
            and next(iter(inspect.signature(getattr(keys, name)).parameters)) == "ns"}


def sample(name: str) -> str:
    """The key ``name`` builds, with ``$ns`` and ``<parameter>`` placeholders."""
    function = builders()[name]
    params = list(inspect.signature(function).parameters)[1:]
    return function("$ns", *(f"<{p}>" for p in params))


def test_the_docstring_lists_every_key_the_module_builds() -> None:
    doc = keys.__doc__ or ""
    missing = [sample(name) for name in builders() if sample(name) not in doc]
    assert not missing, f"keys built by edge/store/keys.py but not listed in its docstring: " \
                        f"{missing}"


def test_every_key_a_lua_script_names_is_listed() -> None:
    doc = keys.__doc__ or ""
    named: set[str] = set()
    for script in resources.files("edge.store.lua").iterdir():
        if script.name.endswith(".lua"):
            named |= set(re.findall(r"^-- KEYS\[\d+\]\s+(\$ns:\S+)", script.read_text(), re.M))
    assert named  # the headers were read
    assert not [k for k in named if k not in doc]


def test_the_hot_store_names_keys_through_the_module() -> None:
    store = HotStore(client=None, namespace="p")  # type: ignore[arg-type]
    assert (store.balance(3), store.limiter(3), store.reservation("r"), store.held(3),
            store.owed(3), store.applied("ref"), store.key_record("sk"),
            store.heartbeat("o")) == (
        keys.balance("p", 3), keys.limiter("p", 3), keys.reservation("p", "r"),
        keys.held("p", 3), keys.owed("p", 3), keys.applied("p", "ref"),
        keys.key_record("p", "sk"), keys.heartbeat("p", "o"))
    assert (store.ledger_stream, store.open_reservations, store.events_channel,
            store.keys_mirrored, store.generation) == (
        keys.ledger_stream("p"), keys.open_reservations("p"), keys.events("p"),
        keys.keys_mirrored("p"), keys.generation("p"))


def test_keys_are_distinct_and_under_the_namespace() -> None:
    built = {name: sample(name) for name in builders()}
    assert all(key.startswith("$ns:") for key in built.values())
    assert len(set(built.values())) == len(built)


def test_no_key_is_built_by_hand_outside_the_key_module() -> None:
    found: list[tuple[str, str, int]] = []
    for package in ("edge", "dramatiq_actors", "simnode"):
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative == "edge/store/keys.py":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                for match in HAND_BUILT.finditer(line):
                    found.append((relative, match.group(1) or match.group(2), number))
    unexpected = [f"{file}:{line} builds '…{what}…'" for file, what, line in found
                  if not any(file == allowed and what.startswith(part)
                             for allowed, part in STILL_BUILT_BY_HAND)]
    assert not unexpected, "build these with edge/store/keys.py: " + "; ".join(unexpected)
    switched = [entry for entry in STILL_BUILT_BY_HAND
                if not any(file == entry[0] and what.startswith(entry[1])
                           for file, what, _line in found)]
    assert not switched, f"switched to edge/store/keys.py: drop {switched} from " \
                         "STILL_BUILT_BY_HAND"
