"""The pages use the chat's module portal (two workers, a simnode, signup credit)."""

from tests.chat.conftest import room_portal  # noqa: F401
