"""How a metered call ended, and the one function that charges for it.

Every caller of a node (the API, chat replies, jobs) ends its call with
:func:`settle`: the outcome gives the usage row's status, the tokens give the
charge, and the request, token and spend series are counted here, so a chat
reply or a job is as visible to the operator as an API call.

=================  ======  ==========================================================
outcome            status  meaning
=================  ======  ==========================================================
done               200     the node answered in full
cancelled          499     the client went away or stopped it (charged what it got)
refused            4xx     the node refused the request as invalid (vLLM's 400/422)
unavailable        503     every node tried refused or failed before the first byte
node_failed        502     the node broke off after the first byte
timed_out          504     the node did not answer in time
shutdown           503     this edge process was stopping
failed             500     the edge failed (a bug)
=================  ======  ==========================================================
"""

from __future__ import annotations

import dataclasses
import enum
from typing import TYPE_CHECKING, Literal

from edge import metrics
from edge.billing.entries import UsageEntry

if TYPE_CHECKING:
    from edge.billing.reservations import Billing, Reservation, Settlement

__all__ = ["Charge", "Outcome", "settle"]


class Outcome(enum.Enum):
    DONE = "done"
    CANCELLED = "cancelled"
    REFUSED = "refused"
    UNAVAILABLE = "unavailable"
    NODE_FAILED = "node_failed"
    TIMED_OUT = "timed_out"
    SHUTDOWN = "shutdown"
    FAILED = "failed"

    @property
    def status(self) -> int:
        """The usage row's status (``refused`` carries the node's own)."""
        return _STATUS[self]


_STATUS = {Outcome.DONE: 200, Outcome.CANCELLED: 499, Outcome.REFUSED: 400,
           Outcome.UNAVAILABLE: 503, Outcome.NODE_FAILED: 502, Outcome.TIMED_OUT: 504,
           Outcome.SHUTDOWN: 503, Outcome.FAILED: 500}


@dataclasses.dataclass(slots=True, frozen=True)
class Charge:
    """What settling a reservation needs: whose it is and at which prices."""

    request_id: str
    key_id: int
    account_id: int
    input_price: int  # micro-dollars per 1M tokens
    output_price: int
    generation: str = ""  # of the hot store that holds the reservation

    @classmethod
    def of(cls, reservation: Reservation) -> Charge:
        return cls(reservation.request_id, reservation.key.id, reservation.key.account_id,
                   reservation.input_price,
                   reservation.output_price, reservation.generation)


async def settle(billing: Billing, charge: Charge, outcome: Outcome, *, prompt_tokens: int,
                 completion_tokens: int, model: str, node_id: int | None, endpoint: str,
                 latency_ms: int, streamed: bool, counted_by: Literal["node", "edge"] = "node",
                 status: int | None = None) -> Settlement:
    """Charge ``charge``'s reservation for the tokens served and record one usage row.

    Parameters:
      endpoint: the usage row's endpoint (``chat``, ``completions``, ``chat-room``,
        ``job-chat``, ...), also the metrics' label.
      status: the node's own status for ``refused`` (default: the outcome's).
      counted_by: ``node`` (its usage) or ``edge`` (counted here: the node sent none).
    """
    status = outcome.status if status is None else status
    entry = UsageEntry.priced(
        request_id=charge.request_id, key_id=charge.key_id, account_id=charge.account_id,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens, input_price=charge.input_price,
        output_price=charge.output_price, model=model, node_id=node_id, endpoint=endpoint,
        latency_ms=latency_ms, status=status, streamed=streamed,
        cancelled=outcome is Outcome.CANCELLED, counted_by=counted_by)
    settlement = await billing.settle_usage(charge.request_id, entry,
                                            generation=charge.generation)
    charged = settlement.charged if settlement.settled else 0
    observe(endpoint, model, status, latency_ms / 1000, prompt_tokens if charged else 0,
            completion_tokens if charged else 0, charged)
    return settlement


def observe(endpoint: str, model: str, status: int, seconds: float, prompt_tokens: int,
            completion_tokens: int, charged: int) -> None:
    """Count one answered call in the request, token and spend series."""
    series = metrics.request_series(endpoint, model, status)
    series.requests.inc()
    series.seconds.observe(seconds)
    if prompt_tokens:
        series.prompt_tokens.inc(prompt_tokens)
    if completion_tokens:
        series.completion_tokens.inc(completion_tokens)
    if charged:
        series.spend.inc(charged)
