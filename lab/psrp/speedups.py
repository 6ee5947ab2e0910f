"""Two of psrpcore's hot paths, made cheap for the lab's hosts without changing a byte they write.

The lab serves every host of a topology from one process, beside the worker and the Temporal server on the same
cores, so its CPU is taken from the engine it is there to exercise. py-spy of the lab under `benchmarks.saga_bench`
and of `Get-VM` in a loop found two costs that are psrpcore's, not the simulation's:

- **The attribute lookup on PSObject.** psrpcore 0.3's `PSObject.__getattribute__` builds a dict of all of an
  object's properties on every attribute read, even one the ordinary lookup answers. Every `isinstance` check that
  fails on a PSObject reads `__class__` through it, and the serializer makes a dozen per value, so writing or reading
  an object of n properties costs about n^2 steps: a quarter of the lab's CPU per migration. The lookup put in here
  builds nothing unless the ordinary lookup fails, and otherwise answers as psrpcore's does: the same
  `AttributeError` when an object has no `PSObject` yet, a property only when no Python attribute has the name (an
  extended property wins over an adapted one, the last of duplicates wins), and `__dict__` with the properties in it.
- **String escaping.** Every string and every property name goes through two regular-expression substitutions; the
  same few hundred names and values come back in every answer. Plain strings are escaped once and remembered.

`install()` does both, only for the psrpcore versions they were checked against: another version keeps its own.
tests/lab/test_psrp_speedups.py holds the bytes of the lab's objects equal with and without them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from psrpcore.types import PSObject
from psrpcore.types import _serializer as serializer

CHECKED_VERSIONS = frozenset({"0.3.1"})

_ORIGINAL_GETATTRIBUTE = PSObject.__getattribute__
_ORIGINAL_ESCAPE: Callable[[str], str] = serializer._serialize_string


def _lazy_getattribute(self: PSObject, item: str) -> Any:
    base = super(PSObject, self).__getattribute__
    ps_object = base("PSObject")
    try:
        value = base(item)
    except AttributeError:
        found = None
        for prop in ps_object.adapted_properties:
            if prop.name == item:
                found = prop
        for prop in ps_object.extended_properties:
            if prop.name == item:
                found = prop
        if found is None:
            raise
        return found.get_value(self)
    if item == "__dict__":
        return _ORIGINAL_GETATTRIBUTE(self, item)
    return value


_escape_plain = functools.lru_cache(maxsize=8192)(_ORIGINAL_ESCAPE)


def _remembered_escape(value: str) -> str:
    # A str subclass (a PSString with properties) may not hash as a str: only plain strings are remembered.
    if type(value) is str:
        return _escape_plain(value)
    return _ORIGINAL_ESCAPE(value)


@functools.cache
def checked() -> bool:
    """Whether this psrpcore is a version these shortcuts (and lab/psrp/create_pipeline.py's) were checked with."""
    try:
        return version("psrpcore") in CHECKED_VERSIONS
    except PackageNotFoundError:
        return False


def installed() -> bool:
    return PSObject.__getattribute__ is _lazy_getattribute and serializer._serialize_string is _remembered_escape


def install() -> bool:
    """Put both in place (once per process is enough); False when this psrpcore is not one they were checked with."""
    if not checked():
        return False
    PSObject.__getattribute__ = _lazy_getattribute  # type: ignore[method-assign]
    serializer._serialize_string = _remembered_escape
    return True


def uninstall() -> None:
    """psrpcore's own paths again (for the tests that compare the two)."""
    PSObject.__getattribute__ = _ORIGINAL_GETATTRIBUTE  # type: ignore[method-assign]
    serializer._serialize_string = _ORIGINAL_ESCAPE  # type: ignore[assignment]
