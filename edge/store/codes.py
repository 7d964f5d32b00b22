"""What the money scripts answer: the first element of each Lua script's reply.

Each script answers a small integer code first (the numbers are the scripts';
they never change), then values that depend on it::

  reserve.lua  {code, value[, gen]}
    RESERVED      1   reserved: value = balance after, gen = the generation, then the
                      requests and tokens left in the key's buckets
    NOT_LOADED    0   the key's balance is not in Redis: load it from SQL, call again
    INSUFFICIENT -1   the balance does not cover the worst case: value = balance
    RPM_LIMITED  -2   requests-per-minute limit: value = milliseconds to wait
    TPM_LIMITED  -3   tokens-per-minute limit: value = milliseconds to wait
    DUPLICATE    -4   this request id is reserved already (a retried command)
    HEALING      -5   no generation: the hot store is being rebuilt; retry soon
    CAPPED       -6   the key's credit cap does not cover the worst case: value =
                      micro-dollars left under the cap in this window
    CAP_NOT_LOADED -7 the key's cap window is not in Redis: load it from SQL, call again

  settle.lua   {code, charged, balance after, gen}
    SETTLED       1   charged now
    NO_RESERVATION 0  no such reservation: settled before in this generation, or lost
                      with an older one (compare ``gen`` with the reservation's)
    HEALING      -5   retry soon

  credit.lua   {code, applied, balance after, deferred}
    APPLIED       1
    NOT_LOADED    0   load the balance and call again
    DUPLICATE    -1   the reference was applied before: nothing changed
    HEALING      -5   retry soon

  replay.lua   {code, applied, balance after}
    APPLIED       1
    NOT_LOADED    0   the balance is not loaded, or the hot store is healing (no
                      generation: the caller tells them apart)
    DUPLICATE    -1   the reference was applied before

  progress.lua answers 1 (recorded) or 0 (the reservation is gone).

One enum per script: the same number means different things to different
scripts (-1 is "insufficient credit" to reserve.lua, "seen before" to credit.lua).
"""

from __future__ import annotations

import enum

__all__ = ["CreditCode", "ReplayCode", "ReserveCode", "SettleCode"]


class ReserveCode(enum.IntEnum):
    """First element of ``reserve.lua``'s reply."""

    RESERVED = 1
    NOT_LOADED = 0
    INSUFFICIENT = -1
    RPM_LIMITED = -2
    TPM_LIMITED = -3
    DUPLICATE = -4
    HEALING = -5
    CAPPED = -6
    CAP_NOT_LOADED = -7


class SettleCode(enum.IntEnum):
    """First element of ``settle.lua``'s reply."""

    SETTLED = 1
    NO_RESERVATION = 0
    HEALING = -5


class CreditCode(enum.IntEnum):
    """First element of ``credit.lua``'s reply."""

    APPLIED = 1
    NOT_LOADED = 0
    DUPLICATE = -1
    HEALING = -5


class ReplayCode(enum.IntEnum):
    """First element of ``replay.lua``'s reply."""

    APPLIED = 1
    NOT_LOADED = 0
    DUPLICATE = -1
