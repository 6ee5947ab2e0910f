"""Session-wide fixtures shared by the test tree."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.samba import SambaDomain, default_root, unavailable_reason


@pytest.fixture(scope="session")
def samba_domain() -> Iterator[SambaDomain]:
    """A real Active Directory: a throwaway Samba AD DC on 127.0.0.1, provisioned and started once per session.

    Where Samba cannot run (not installed, not root) the tests that need it are skipped with the reason; in CI
    (`CI` set) that is a failure instead, so nothing is silently skipped there.
    """
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the directory tests need Samba: {reason}")
        pytest.skip(f"directory tests not run: {reason}")
    domain = SambaDomain(default_root())
    domain.acquire()
    try:
        domain.provision()
        domain.start()
        yield domain
    finally:
        domain.stop()
        shutil.rmtree(domain.root / "dc", ignore_errors=True)
        shutil.rmtree(domain.root / "secrets", ignore_errors=True)
        domain.release()
