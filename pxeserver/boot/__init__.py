"""The one boot policy every protocol asks (:class:`BootService`): what a machine boots,
the scripts and configs it is served, and how each step is recorded.
:mod:`.service` answers HTTP and the operators; :mod:`.udp`, ProxyDHCP and TFTP."""

from .errors import NoMatch
from .service import BootService, Explanation, Preview

__all__ = ["BootService", "Explanation", "NoMatch", "Preview"]
