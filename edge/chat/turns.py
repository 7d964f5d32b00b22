"""Alternatives in a conversation: regenerate the last reply, edit the last question.

Nothing is overwritten. A regenerated reply is a new message beside the old one
(``variant_of`` names the first of them), an edited question is a new message
beside the one it replaces, and exactly one of each set is ``current``: shown, and
sent to the model as context. Only the last exchange (the newest current question
and its replies) branches, so a conversation stays one line of current messages
with the alternatives of its end beside it, and choosing among them is a flip of
``current`` flags that every member sees through a ``chosen`` event.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from edge.chat.protocol import FrameError
from edge.db.models import ApiKey, ChatMessage, ChatRoom

__all__ = ["Flip", "choose", "edit", "editable", "regenerable", "visible_history"]


@dataclass
class Flip:
    """Messages now shown and now hidden (a ``chosen`` event)."""

    show: list[int] = field(default_factory=list)
    hide: list[int] = field(default_factory=list)


def root(message: ChatMessage) -> int:
    """The id naming a set of alternatives: its first message's."""
    return int(message.variant_of or message.id)


async def visible_history(room_id: int, upto: int, limit: int) -> list[ChatMessage]:
    """The current messages up to ``upto``, oldest first: what the model is sent."""
    rows = await ChatMessage.filter(room_id=room_id, id__lte=upto, current=True).order_by(
        "-id").limit(limit)
    return list(reversed(rows))


async def _last_question(room: ChatRoom) -> ChatMessage | None:
    return await ChatMessage.filter(room_id=room.id, role="user", current=True).order_by(
        "-id").first()


async def _replies(question_id: int) -> list[ChatMessage]:
    return await ChatMessage.filter(reply_to=question_id, role="assistant").order_by("id")


async def _quiet(question: ChatMessage) -> None:
    if any(r.status == "streaming" for r in await _replies(question.id)):
        raise FrameError("busy", "A reply to that message is still being written; wait for "
                                 "it or stop it first.")


async def regenerable(room: ChatRoom, reply_id: int) -> tuple[ChatMessage, ChatMessage]:
    """The question to answer again: the last one, once its replies have ended.

    ``reply_id`` is any of its replies (shown or set aside): another joins them.
    """
    reply = await ChatMessage.get_or_none(id=reply_id, room_id=room.id, role="assistant")
    if reply is None:
        raise FrameError("not_found", "No such reply in this room.")
    question = await _last_question(room)
    if question is None or reply.reply_to != question.id:
        raise FrameError("not_last", "Only the last reply can be regenerated.")
    await _quiet(question)
    return question, reply


async def hide_replies(question: ChatMessage) -> Flip:
    """Set the current replies of ``question`` aside (a new one is coming)."""
    hidden = [r.id for r in await _replies(question.id) if r.current]
    if hidden:
        await ChatMessage.filter(id__in=hidden).update(current=False)
    return Flip(hide=hidden)


async def editable(room: ChatRoom, message_id: int, account_id: int) -> ChatMessage:
    """The question to replace: the account's own, and the last one said in the room."""
    question = await ChatMessage.get_or_none(id=message_id, room_id=room.id, role="user")
    if question is None or not question.current:
        raise FrameError("not_found", "No such message in this room.")
    author = await ApiKey.get_or_none(id=question.key_id)
    if author is None or author.account_id != account_id:
        raise FrameError("forbidden", "Only its author can edit a message.")
    last = await _last_question(room)
    if last is None or last.id != question.id:
        raise FrameError("not_last", "Only the last message said in the room can be edited.")
    await _quiet(question)
    return question


async def edit(question: ChatMessage, text: str, *, author: str, key_id: int) -> tuple[
        ChatMessage, Flip]:
    """A new version of ``question``, current in its place (with its replies set aside)."""
    async with in_transaction():
        flip = Flip(hide=[question.id, *[r.id for r in await _replies(question.id)
                                         if r.current]])
        await ChatMessage.filter(id__in=flip.hide).update(current=False)
        version = await ChatMessage.create(room_id=question.room_id, role="user",
                                           author=author, key_id=key_id, content=text,
                                           variant_of=root(question))
    return version, flip


async def choose(room: ChatRoom, message_id: int) -> Flip:
    """Show alternative ``message_id`` of the last exchange instead of its siblings."""
    chosen = await ChatMessage.get_or_none(id=message_id, room_id=room.id)
    last = await _last_question(room)
    if chosen is None or last is None:
        raise FrameError("not_found", "No such message in this room.")
    flip = Flip()
    async with in_transaction():
        if chosen.role == "assistant":
            if chosen.reply_to != last.id:
                raise FrameError("not_last", "Only the alternatives of the last reply can be "
                                             "chosen.")
            siblings = await _replies(last.id)
        else:
            if root(chosen) != root(last):
                raise FrameError("not_last", "Only the versions of the last message can be "
                                             "chosen.")
            siblings = await ChatMessage.filter(Q(id=root(last)) | Q(variant_of=root(last)),
                                                room_id=room.id, role="user")
        if chosen.current:
            return flip  # shown already
        if chosen.role == "user":
            for sibling in siblings:
                if sibling.id != chosen.id:
                    flip.hide += [r.id for r in await _replies(sibling.id) if r.current]
            answers = await _replies(chosen.id)
            if answers:  # the version comes back with its newest reply
                flip.show.append(answers[-1].id)
        flip.hide += [s.id for s in siblings if s.id != chosen.id and s.current]
        flip.show.append(chosen.id)
        await ChatMessage.filter(id__in=flip.hide).update(current=False)
        await ChatMessage.filter(id__in=flip.show).update(current=True)
    return flip
