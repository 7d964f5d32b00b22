"""The server-side secret mixed into API-key hashes.

Set ``PORTAL_KEY_PEPPER`` in production (the Ansible role writes it from Vault).
Without it, a random pepper is made once and kept in ``data_dir/pepper`` (mode
0600), so a development install works without configuration.
"""

from __future__ import annotations

import os
import secrets
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.settings import Settings

__all__ = ["load_pepper"]


def load_pepper(settings: Settings) -> bytes:
    if settings.key_pepper:
        return settings.key_pepper.encode()
    path = settings.data_path / "pepper"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".pepper.{os.getpid()}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_hex(32))
        try:
            os.link(draft, path)  # atomic, and never replaces a pepper another process made
        except FileExistsError:
            pass
        finally:
            os.unlink(draft)
    value = path.read_text().strip()
    if not value:
        raise RuntimeError(f"{path} is empty; delete it or set PORTAL_KEY_PEPPER")
    return value.encode()
