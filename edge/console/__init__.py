"""The operator's console: pages under ``/admin/console``, signed in with the admin token.

One module per page family (``signin``, ``overview``, ``accounts``, ``models``,
``nodes``, ``records``), all on one blueprint (:mod:`edge.console.common`); their
actions are the admin API's routes, sent by ``edge/static/console.js``.
"""

from edge.console import accounts as _accounts  # noqa: F401  (its routes are on bp)
from edge.console import ledger as _ledger  # noqa: F401  (its routes are on bp)
from edge.console import models as _models  # noqa: F401  (its routes are on bp)
from edge.console import nodes as _nodes  # noqa: F401  (its routes are on bp)
from edge.console import overview as _overview  # noqa: F401  (its routes are on bp)
from edge.console import payments as _payments  # noqa: F401  (its routes are on bp)
from edge.console import records as _records  # noqa: F401  (its routes are on bp)
from edge.console import signin as _signin  # noqa: F401  (its routes are on bp)
from edge.console.common import bp, root_bp

__all__ = ["bp", "root_bp"]
