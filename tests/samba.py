"""The throwaway Samba AD DC the directory tests and benchmarks use: the product's own, from lab.samba.

Kept so that `from tests.samba import SambaDomain, default_root, unavailable_reason` goes on working.
"""

from __future__ import annotations

from lab.samba import (
    WORKSTATION_TRUST_ACCOUNT,
    SambaDomain,
    SambaUnavailable,
    default_root,
    unavailable_reason,
)

__all__ = ["WORKSTATION_TRUST_ACCOUNT", "SambaDomain", "SambaUnavailable", "default_root", "unavailable_reason"]
