"""The host client: structured PowerShell commands on a Hyper-V host over WinRM/PSRP.

`HostClient(entry)` holds ONE runspace pool (a shell on the host) and runs structured commands on it: cmdlet +
named parameters + switches + positional arguments, never PowerShell text (DESIGN.md invariant 2; there is no
`add_script` in this module). `run` and `pipeline` cost one round trip each; `batch` runs several statements in
one. Every result is checked for `had_errors` AND the error stream: pypsrp 0.9.1 reports a non-terminating
error (Hyper-V's usual way: `Get-VM -Name ghost`, a failed `Move-VM`) with state Completed and `had_errors`
False.

A HostClient is a context manager of its own (open, commands, close: tests and tools), or one of the worker's
`HostSessions`: open pools kept per host and checked out by one activity at a time, around the commands it
runs, so that a step pays for no open and no close. A session that broke (reference/psrp-wire-notes.md: a
WinRM session that broke cannot be trusted again) is closed and replaced, and so is one near the host's quota
of pipelines per shell; the pool never holds more shells on a host than Windows allows one user
(reference/hyperv-fidelity-catalogue.md section 6.3).

Whatever goes wrong, the caller gets one of the engine's errors (activities/errors.py): every error record
and every exception raised while talking to the host goes through the one table of what hosts say,
activities/host_errors.py (`RULES`, `classify`, `classify_exception`), with the host, the command, the
account's name and where its password comes from (never the password) for the message and remedy, and the
client's own password handed over to be scrubbed out of anything raised. `props()` flattens a deserialized
.NET object into a dict.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import logging
import re
import struct
import threading
import time
import uuid
import weakref
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, TypeVar, cast

from pydantic import SecretStr
from pypsrp._utils import version_equal_or_newer
from pypsrp.complex_objects import (
    ApartmentState,
    Color,
    CommandMetadataCount,
    CommandOrigin,
    ComplexObject,
    Coordinates,
    CultureInfo,
    DictionaryMeta,
    GenericComplexObject,
    HostMethodIdentifier,
    InformationalRecord,
    KeyInfoDotNet,
    ListMeta,
    ObjectMeta,
    ParameterMetadata,
    PipelineResultTypes,
    ProgressRecordType,
    PSCredential,
    PSInvocationState,
    PSThreadOptions,
    QueueMeta,
    RemoteStreamOptions,
    SessionStateEntryVisibility,
    Size,
    StackMeta,
)
from pypsrp.exceptions import InvalidPSRPOperation, WinRMTransportError
from pypsrp.messages import (
    DebugRecord,
    Destination,
    ErrorRecordMessage,
    InformationRecord,
    MessageType,
    VerboseRecord,
    WarningRecord,
)
from pypsrp.powershell import Fragment, Fragmenter, PowerShell, RunspacePool
from pypsrp.serializer import Serializer
from pypsrp.wsman import WSMan

from activities.errors import SnlmError, TransientError
from activities.host_errors import ErrorInfo, breaks_session, classify, classify_exception
from activities.inventory import HostEntry, Inventory
from workflows import contracts as c

__all__ = [
    "MAX_SHELLS_PER_USER",
    "NULL",
    "Command",
    "CommandResult",
    "HostClient",
    "HostSessions",
    "ProgressInfo",
    "SessionReport",
    "SessionStats",
    "Statement",
    "add_session_observer",
    "props",
    "side_by_side",
]

log = logging.getLogger(__name__)

_A = TypeVar("_A")
_B = TypeVar("_B")

# A cmdlet name as PowerShell spells one (Verb-Noun, or a bare name such as `klist`), and a parameter name.
# Anything else is refused before it reaches the wire: these are names, never PowerShell text.
_CMDLET_NAME: Final = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9_]+)?$")
_PARAMETER_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# How deep props() follows nested objects (Hyper-V objects arrive serialized to depth 1 anyway).
_MAX_DEPTH: Final = 3


class _Null:
    """The type of `NULL`: a parameter value sent as PowerShell's `$null` (a plain None leaves the parameter out)."""

    def __repr__(self) -> str:
        return "NULL"


NULL: Final = _Null()


# -- results ------------------------------------------------------------------------------------------------
def _plain(value: Any, depth: int) -> Any:
    if isinstance(value, GenericComplexObject):
        if (value.adapted_properties or value.extended_properties) and depth < _MAX_DEPTH:
            return props(value, _depth=depth + 1)
        # An enum (its ToString is the name) or an object serialized past its depth (ToString).
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(item, depth) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item, depth) for key, item in value.items()}
    if isinstance(value, str | int | float | bool | bytes) or value is None:
        return value
    if type(value).__module__.startswith("pypsrp"):
        return str(value)
    return value  # uuid.UUID, Decimal, datetime...


def props(obj: Any, *, _depth: int = 0) -> dict[str, Any]:
    """A deserialized .NET object's properties as a dict: adapted (the .NET properties) and extended (the
    ps1xml aliases, Select-Object / PSCustomObject members), enums as their names, nested objects as dicts."""
    out: dict[str, Any] = {}
    for bag in (getattr(obj, "adapted_properties", None) or {}, getattr(obj, "extended_properties", None) or {}):
        for name, value in bag.items():
            out[str(name)] = _plain(value, _depth)
    return out


def _output_value(value: Any) -> Any:
    if isinstance(value, GenericComplexObject) and (value.adapted_properties or value.extended_properties):
        return props(value)
    return _plain(value, 0)


@dataclass(frozen=True)
class ProgressInfo:
    """One progress record (a synchronous Move-VM writes "<pct>%" records, then a Completed one)."""

    activity: str
    description: str
    percent_complete: int
    record_type: str  # "Processing" or "Completed"
    current_operation: str = ""
    seconds_remaining: int = -1


@dataclass(frozen=True)
class Command:
    """One structured command: a cmdlet, named parameters (a None value is left out; `NULL` passes `$null`, as
    in `Set-VMDvdDrive -Path $null`), switches, positional arguments. Values are serialized by pypsrp as typed
    CLIXML, never spliced into text."""

    cmdlet: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    switches: tuple[str, ...] = ()
    arguments: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if not _CMDLET_NAME.match(self.cmdlet):
            raise ValueError(f"not a cmdlet name: {self.cmdlet!r} (structured commands only)")
        for name in (*self.parameters, *self.switches):
            if not _PARAMETER_NAME.match(name):
                raise ValueError(f"not a parameter name: {name!r} (for {self.cmdlet})")


@dataclass(frozen=True)
class CommandResult:
    """What a command returned.

    Attributes:
        host, command: where and what ("Get-VM", or "Get-VM | Select-Object" for a pipeline).
        output: each output object flattened (`props()` for objects, plain values otherwise).
        raw_output: the objects as pypsrp deserialized them.
        warnings, verbose: the records' messages.
        progress: the progress records.
        records: every error record, as ErrorInfo.
        errors: the engine's error for each record (only ever non-empty with `check=False`).
        state: "Completed", "Failed" or "Stopped"; "Unknown" for a statement of a batch whose end was not seen.
    """

    host: str
    command: str
    output: tuple[Any, ...] = ()
    raw_output: tuple[Any, ...] = ()
    warnings: tuple[str, ...] = ()
    verbose: tuple[str, ...] = ()
    progress: tuple[ProgressInfo, ...] = ()
    records: tuple[ErrorInfo, ...] = ()
    errors: tuple[SnlmError, ...] = ()
    state: str = "Completed"

    @property
    def ok(self) -> bool:
        return not self.records and self.state == "Completed"


# -- observers ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SessionReport:
    """What one use of a session did: its host, round trips and commands (no arguments, so no data leaks).

    A standalone HostClient reports once, as it closes (its open and close included); a session of a
    `HostSessions` pool reports at the end of each checkout (its open included when that checkout opened it;
    closes the pool does later belong to no checkout)."""

    host: str
    round_trips: int
    calls: dict[str, int]


_observers: list[Callable[[SessionReport], None]] = []


def add_session_observer(observer: Callable[[SessionReport], None]) -> Callable[[], None]:
    """Call `observer` as each standalone HostClient closes and as each pooled session is checked back in (on
    the activity's thread, so `activity.info()` says which step it served); returns the function that removes
    it. Used for round-trip accounting per step."""
    _observers.append(observer)
    return lambda: _observers.remove(observer)


def _notify(report: SessionReport) -> None:
    for observer in list(_observers):
        try:
            observer(report)
        except Exception:  # accounting must never break a host session
            log.warning("a session observer failed", exc_info=True)


def side_by_side(first: Callable[[], _A], second: Callable[[], _B]) -> tuple[_A, _B]:
    """`first()` on this thread and `second()` on a thread of its own, at once; both results.

    For reads of two hosts that do not depend on each other (each on its own session): they cost one round trip
    of wall time instead of two, and a move's preflight or check is that much shorter. `second` runs in a copy of
    this thread's context, so it still knows which activity it serves (heartbeats, round-trip accounting). Both run
    to their end before an error is raised, `first`'s before `second`'s: a read left running would still be using
    its session after the caller gave it back.
    """
    outcome: list[_B] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(second())
        except BaseException as error:  # handed to the caller's thread, raised there
            failure.append(error)

    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(run,), name="snlm-side-read", daemon=True)
    thread.start()
    try:
        mine = first()
    finally:
        thread.join()
    if failure:
        raise failure[0]
    return mine, outcome[0]


# -- the wire codec ---------------------------------------------------------------------------------------------
# pypsrp 0.9.1 spends most of a worker's CPU per move on its own bookkeeping, not on the wire: each command it is
# given becomes a Command object with eight PipelineResultTypes objects, deep-copied twice to build the
# CREATE_PIPELINE (Pipeline._get_statements) as an ElementTree; and every nested element of every object it receives
# is rendered back to text (Serializer.deserialize, for ComplexObject._xml). Here the host client's structured
# commands are written straight to the CLIXML pypsrp would send for them, and received objects are read without the
# text: pypsrp's wire format and objects, byte for byte out and object for object in (tests/activities/
# test_wire_codec.py compares them with pypsrp's own), made for a fraction of the CPU.

# A command as the wire carries it: the cmdlet, then its arguments in order, (name, value) for a parameter (a value
# of None: a switch, or $null) and (None, value) for a positional argument. A statement is a list of them (`A | B`).
_WireCommand = tuple[str, tuple[tuple[str | None, Any], ...]]
_WireStatement = list[_WireCommand]

# Characters that change a string on its way into CLIXML: pypsrp's `_xHHHH_` escapes (an underscore before x, C0
# and C1 controls, characters beyond the BMP) and XML's own (&, <, >).
_NOT_PLAIN: Final = re.compile("[&<>_\u0000-\u001f\u007f-\u009f\U00010000-\U0010ffff]")
# The .NET type of a PowerShell object's command, argument and statement lists.
_PS_OBJECT_LIST: Final = (
    "System.Collections.Generic.List`1[[System.Management.Automation.PSObject, System.Management.Automation, "
    "Version=1.0.0.0, Culture=neutral, PublicKeyToken=31bf3856ad364e35]]",
    "System.Object",
)
# Every command's merge settings, all "None" (what pypsrp's Command sends unless told otherwise): those before its
# arguments, then those of protocol 2.2 (PowerShell 3.0) and of 2.3 (PowerShell 5.1) after them.
_MERGES_BEFORE: Final = ("MergeMyResult", "MergeToResult", "MergePreviousResults")
_MERGES_2_2: Final = ("MergeError", "MergeWarning", "MergeVerbose", "MergeDebug")
_MERGES_2_3: Final = ("MergeInformation",)
_HOST_INFO_NULL: Final = (
    '<MS><B N="_isHostNull">true</B><B N="_isHostUINull">true</B><B N="_isHostRawUINull">true</B>'
    '<B N="_useRunspaceHost">true</B></MS>'
)


def _xml_escape(text: str) -> str:
    """Text as ElementTree escapes it in an element."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _element(tag: str, name: str | None, text: str) -> str:
    """One element as ElementTree writes it: `<S N="V">text</S>`, or `<S N="V" />` when empty."""
    head = f'<{tag} N="{name}"' if name is not None else f"<{tag}"
    return f"{head}>{text}</{tag}>" if text else f"{head} />"


class _PipelineWriter:
    """The CLIXML of the CREATE_PIPELINE message pypsrp's PowerShell.begin_invoke sends for these statements (no
    input, no history, no host), as pypsrp's Serializer writes it, element for element.

    RefIds and type-name references come from the serializer's own counters, in document order, so a value left to
    pypsrp (a list, a hashtable, a GUID...) is numbered as pypsrp would number it."""

    def __init__(self, serializer: Serializer, protocol_version: str) -> None:
        serializer._clear()
        self.serializer = serializer
        self.merges_after = (_MERGES_2_2 if version_equal_or_newer(protocol_version, "2.2") else ()) + (
            _MERGES_2_3 if version_equal_or_newer(protocol_version, "2.3") else ()
        )
        self.none = PipelineResultTypes(value=PipelineResultTypes.NONE)

    def message(self, statements: Sequence[_WireStatement], apartment_state: int) -> bytes:
        head = f'<Obj RefId="{self.ref()}"><MS><B N="NoInput">true</B>'
        parts = [
            head,
            self.enum("ApartmentState", ApartmentState(value=apartment_state)),
            self.enum("RemoteStreamOptions", RemoteStreamOptions(value=RemoteStreamOptions.ADD_INVOCATION_INFO)),
            '<B N="AddToHistory">false</B>',
            f'<Obj RefId="{self.ref()}" N="HostInfo">{_HOST_INFO_NULL}</Obj>',
            f'<Obj RefId="{self.ref()}" N="PowerShell"><MS><B N="IsNested">false</B>',
        ]
        if len(statements) > 1:
            parts.append(f'<Obj RefId="{self.ref()}" N="ExtraCmds">{self.type_names(_PS_OBJECT_LIST)}<LST>')
            for statement in statements:
                parts.append(f'<Obj RefId="{self.ref()}"><MS>{self.commands(statement)}</MS></Obj>')
            parts.append("</LST></Obj>")
        else:
            parts.append('<Nil N="ExtraCmds" />')
        parts.append(self.commands(statements[0]))
        parts.append('<Nil N="History" /><B N="RedirectShellErrorOutputPipe">false</B></MS></Obj>')
        parts.append('<B N="IsNested">false</B></MS></Obj>')
        return "".join(parts).encode("utf-8")

    def commands(self, statement: _WireStatement) -> str:
        head = f'<Obj RefId="{self.ref()}" N="Cmds">{self.type_names(_PS_OBJECT_LIST)}'
        return head + _element("LST", None, "".join(self.command(command) for command in statement)) + "</Obj>"

    def command(self, command: _WireCommand) -> str:
        cmdlet, arguments = command
        parts = [f'<Obj RefId="{self.ref()}"><MS>', _element("S", "Cmd", self.text(cmdlet))]
        parts.append('<B N="IsScript">false</B><Nil N="UseLocalScope" />')
        parts += [self.enum(name, self.none) for name in _MERGES_BEFORE]
        parts.append(f'<Obj RefId="{self.ref()}" N="Args">{self.type_names(_PS_OBJECT_LIST)}')
        parts.append(_element("LST", None, "".join(self.argument(name, value) for name, value in arguments)))
        parts.append("</Obj>")
        parts += [self.enum(name, self.none) for name in self.merges_after]
        parts.append("</MS></Obj>")
        return "".join(parts)

    def argument(self, name: str | None, value: Any) -> str:
        head = f'<Obj RefId="{self.ref()}"><MS>'
        label = _element("S", "N", self.text(name)) if name is not None else '<Nil N="N" />'
        return f"{head}{label}{self.value(value)}</MS></Obj>"

    def value(self, value: Any) -> str:
        """A parameter's value, typed as pypsrp types it."""
        kind = type(value)
        if value is None:
            return '<Nil N="V" />'
        if kind is str:
            return _element("S", "V", self.text(value))
        if kind is bool:
            return _element("B", "V", "true" if value else "false")
        if kind is int:
            return _element("I32", "V", str(value))
        # Anything else (a list, a hashtable, a GUID, an object...) is written by pypsrp itself, numbered from here on.
        parent = ET.Element("MS")
        self.serializer._create_obj(parent, value, meta=ObjectMeta(name="V"))
        return "".join(ET.tostring(child, encoding="unicode") for child in parent)

    # -- pieces ----------------------------------------------------------------------------------------------
    def ref(self) -> str:
        ref: str = self.serializer._get_obj_id()
        return ref

    def text(self, value: str) -> str:
        if not _NOT_PLAIN.search(value):
            return value
        return _xml_escape(cast(str, self.serializer._serialize_string(value)))

    def type_names(self, types: Sequence[str]) -> str:
        known = self.serializer.tn
        ref = known.get(types[0])
        if ref is not None:
            return f'<TNRef RefId="{ref}" />'
        ref = self.serializer.tn_id
        self.serializer.tn_id += 1
        known[types[0]] = ref
        # pypsrp writes type names as they are (XML-escaped, without `_xHHHH_` escapes).
        return f'<TN RefId="{ref}">' + "".join(_element("T", None, _xml_escape(name)) for name in types) + "</TN>"

    def enum(self, name: str, value: Any) -> str:
        head = f'<Obj RefId="{self.ref()}" N="{name}">'
        to_string = _element("ToString", None, self.text(value._to_string))
        return f"{head}{self.type_names(value._types)}{to_string}<I32>{value.value}</I32></Obj>"


class _PipelineMessage(ComplexObject):
    """A CREATE_PIPELINE already written as CLIXML (by `_PipelineWriter`), on its way to `_Fragmenter`."""

    MESSAGE_TYPE = MessageType.CREATE_PIPELINE

    def __init__(self, clixml: bytes) -> None:
        super().__init__()
        self.clixml = clixml


class _PowerShell(PowerShell):
    """A pipeline of structured commands, `statements`, whose CREATE_PIPELINE `_PipelineWriter` writes.

    With pipeline input (or another option of begin_invoke) it is pypsrp's own PowerShell: the same commands are
    added as pypsrp objects and pypsrp writes the message."""

    def __init__(self, pool: RunspacePool, statements: Sequence[_WireStatement]) -> None:
        super().__init__(pool)
        self.statements = list(statements)

    def begin_invoke(
        self,
        input: Any = None,
        add_to_history: bool = False,
        apartment_state: int | None = None,
        redirect_shell_error_to_out: bool = False,
        remote_stream_options: int | None = RemoteStreamOptions.ADD_INVOCATION_INFO,
    ) -> None:
        pool = self.runspace_pool
        plain = (
            input is None
            and not (add_to_history or redirect_shell_error_to_out)
            and apartment_state is None
            and remote_stream_options == RemoteStreamOptions.ADD_INVOCATION_INFO
            and pool.host is None
            and bool(pool.protocol_version)
            and not self.commands
            and self.state == PSInvocationState.NOT_STARTED
        )
        if not plain:
            for statement in self.statements:
                for cmdlet, arguments in statement:
                    self.add_cmdlet(cmdlet)
                    for name, value in arguments:
                        if name is None:
                            self.add_argument(value)
                        else:
                            self.add_parameter(name, value)
                self.add_statement()
            self.statements = []
            super().begin_invoke(
                input, add_to_history, apartment_state, redirect_shell_error_to_out, remote_stream_options
            )
            return
        if not self.statements:
            raise InvalidPSRPOperation("Cannot invoke PowerShell without any commands being set")
        writer = _PipelineWriter(pool._serializer, cast(str, pool.protocol_version))
        self._invoke(_PipelineMessage(writer.message(self.statements, pool.apartment_state)))


class _Fragmenter(Fragmenter):
    """pypsrp's Fragmenter, taking CREATE_PIPELINE messages already written (`_PipelineMessage`) as they are."""

    def fragment(self, data: Any, rpid: str, pid: str | None = None, remaining_size: int | None = None) -> list[bytes]:
        if not isinstance(data, _PipelineMessage) or remaining_size is not None:
            return list(super().fragment(data, rpid, pid, remaining_size))
        empty = uuid.UUID(int=0)
        message = (
            struct.pack("<II", Destination.SERVER, MessageType.CREATE_PIPELINE)
            + (uuid.UUID(rpid) if rpid is not None else empty).bytes_le
            + (uuid.UUID(pid) if pid is not None else empty).bytes_le
            + data.clixml
        )
        fragments = [
            Fragment(self.outgoing_counter, index, chunk, index == 0, end).pack()
            for index, (chunk, end) in enumerate(self._byte_iterator(message, self.max_size))
        ]
        self.outgoing_counter += 1
        return fragments


def _text_of(element: ET.Element) -> str:
    return cast(str, element.text)


# What Serializer.deserialize makes of each primitive CLIXML element, as pypsrp makes it.
_PRIMITIVES: Final[dict[str, Callable[[Serializer, ET.Element], Any]]] = {
    "S": lambda s, d: s._deserialize_string(d.text),
    "ToString": lambda s, d: s._deserialize_string(d.text),
    "C": lambda s, d: chr(int(_text_of(d))),
    "B": lambda s, d: _text_of(d).lower() == "true",
    "DT": lambda s, d: d.text,
    "TS": lambda s, d: d.text,
    "By": lambda s, d: int(_text_of(d)),
    "SB": lambda s, d: int(_text_of(d)),
    "U16": lambda s, d: int(_text_of(d)),
    "I16": lambda s, d: int(_text_of(d)),
    "U32": lambda s, d: int(_text_of(d)),
    "I32": lambda s, d: int(_text_of(d)),
    "U64": lambda s, d: int(_text_of(d)),
    "I64": lambda s, d: int(_text_of(d)),
    "Sg": lambda s, d: float(_text_of(d)),
    "Db": lambda s, d: float(_text_of(d)),
    "D": lambda s, d: d.text,
    "BA": lambda s, d: base64.b64decode(_text_of(d)),
    "G": lambda s, d: uuid.UUID(d.text),
    "URI": lambda s, d: s._deserialize_string(d.text),
    "Nil": lambda s, d: None,
    "Version": lambda s, d: d.text,
    "XD": lambda s, d: s._deserialize_string(d.text),
    "SBK": lambda s, d: s._deserialize_string(d.text),
    "SS": lambda s, d: s._deserialize_secure_string(d),
    "Ref": lambda s, d: s.obj[d.attrib["RefId"]],
}


def _obj_meta(tag: str, obj: Any = None) -> Callable[[], ObjectMeta]:
    return lambda: ObjectMeta(tag, object=obj)


# The .NET types Serializer.deserialize knows, each with a factory of the metadata it uses for them: fresh per use,
# because deserializing a list writes its first entry's tag into the list's metadata.
_STRUCTURES: Final[dict[str, Callable[[], ObjectMeta]]] = {
    "Selected.Microsoft.PowerShell.Commands.GenericMeasureInfo": _obj_meta("Obj", CommandMetadataCount),
    "System.Array": ListMeta,
    "System.Collections.ArrayList": ListMeta,
    "System.Collections.Hashtable": DictionaryMeta,
    "System.Collections.Generic.List": ListMeta,
    "System.Collections.Queue": QueueMeta,
    "System.Collections.Stack": StackMeta,
    "System.ConsoleColor": _obj_meta("Obj", Color),
    "System.Management.Automation.CommandOrigin": _obj_meta("Obj", CommandOrigin),
    "System.Management.Automation.DebugRecord": _obj_meta("Obj", DebugRecord),
    "System.Management.Automation.ErrorRecord": _obj_meta("Obj", ErrorRecordMessage),
    "System.Management.Automation.Host.Coordinates": _obj_meta("Obj", Coordinates),
    "System.Management.Automation.Host.KeyInfo": _obj_meta("Obj", KeyInfoDotNet),
    "System.Management.Automation.Host.Size": _obj_meta("Obj", Size),
    "System.Management.Automation.InformationalRecord": _obj_meta("Obj", InformationalRecord),
    "System.Management.Automation.InformationRecord": _obj_meta("Obj", InformationRecord),
    "System.Management.Automation.ParameterMetadata": _obj_meta("Obj", ParameterMetadata),
    "System.Management.Automation.ProgressRecordType": _obj_meta("Obj", ProgressRecordType),
    "System.Management.Automation.PSBoundParametersDictionary": DictionaryMeta,
    "System.Management.Automation.PSCredential": _obj_meta("Obj", PSCredential),
    "System.Management.Automation.PSObject": _obj_meta("ObjDynamic", GenericComplexObject),
    "System.Management.Automation.PSPrimitiveDictionary": DictionaryMeta,
    "System.Management.Automation.PSTypeName": _obj_meta("S"),
    "System.Management.Automation.Remoting.RemoteHostMethodId": _obj_meta("Obj", HostMethodIdentifier),
    "System.Management.Automation.Runspaces.ApartmentState": _obj_meta("Obj", ApartmentState),
    "System.Management.Automation.Runspaces.PipelineResultTypes": _obj_meta("Obj", PipelineResultTypes),
    "System.Management.Automation.Runspaces.PSThreadOptions": _obj_meta("Obj", PSThreadOptions),
    "System.Management.Automation.Runspaces.RemoteStreamOptions": _obj_meta("Obj", RemoteStreamOptions),
    "System.Management.Automation.SessionStateEntryVisibility": _obj_meta("Obj", SessionStateEntryVisibility),
    "System.Management.Automation.VerboseRecord": _obj_meta("Obj", VerboseRecord),
    "System.Management.Automation.WarningRecord": _obj_meta("Obj", WarningRecord),
    "System.Globalization.CultureInfo": _obj_meta("Obj", CultureInfo),
    "System.Object": _obj_meta("ObjDynamic", GenericComplexObject),
    "System.String": _obj_meta("S"),
    "System.Char": _obj_meta("C"),
    "System.Boolean": _obj_meta("B"),
    "System.DateTime": _obj_meta("DT"),
    "System.Byte": _obj_meta("By"),
    "System.SByte": _obj_meta("SB"),
    "System.UInt16": _obj_meta("U16"),
    "System.Int16": _obj_meta("I16"),
    "System.UInt32": _obj_meta("U32"),
    "System.Int32": _obj_meta("I32"),
    "System.UInt64": _obj_meta("U64"),
    "System.Int64": _obj_meta("I64"),
    "System.Single": _obj_meta("Sg"),
    "System.Double": _obj_meta("Db"),
    "System.Decimal": _obj_meta("D"),
    "System.Guid": _obj_meta("G"),
    "System.Uri": _obj_meta("URI"),
    "System.Version": _obj_meta("Version"),
    "System.Xml.XmlDocument": _obj_meta("XD"),
    "System.Management.Automation.ScriptBlock": _obj_meta("SBK"),
    "System.Security.SecureString": _obj_meta("SS"),
}


def _known_type(obj_types: Sequence[str]) -> ObjectMeta | None:
    """The metadata Serializer.deserialize picks for an object of these .NET types (the first one it knows)."""
    for obj_type in obj_types:
        if obj_type.startswith("Deserialized.System."):
            obj_type = obj_type[13:]
        is_list = False
        if obj_type.endswith("[]"):
            obj_type = obj_type[0:-2]
            is_list = True
        elif obj_type.startswith("System.Collections.Generic.List`1[["):
            obj_type = obj_type[35:-1].split(",")[0]
            is_list = True
        elif obj_type.startswith("System.Collections.ObjectModel.Collection`1[["):
            obj_type = obj_type[45:-1].split(",")[0]
            is_list = True
        elif obj_type.startswith("System.Collections.ObjectModel.ReadOnlyCollection`1[["):
            obj_type = obj_type[53:-1].split(",")[0]
            is_list = True
        elif obj_type.startswith("System.Collections.Generic.Dictionary`2[["):
            dict_meta = obj_type[41:-2].split("],[")
            key_meta = _STRUCTURES.get(dict_meta[0].split(",")[0])
            value_meta = _STRUCTURES.get(dict_meta[1].split(",")[0])
            return DictionaryMeta(
                dict_key_meta=key_meta() if key_meta else ObjectMeta(),
                dict_value_meta=value_meta() if value_meta else ObjectMeta(),
            )
        factory = _STRUCTURES.get(obj_type)
        if factory is not None:
            return ListMeta(list_value_meta=factory()) if is_list else factory()
    return None


class _Serializer(Serializer):
    """pypsrp's Serializer, deserializing without rendering each nested element back to text.

    pypsrp keeps that text as `ComplexObject._xml` of every object, nested ones included, for
    `RunspacePool.get_command_metadata` alone (which this module never calls): here only an object that arrived as
    text keeps it (a message's top object). The rest is pypsrp's algorithm, step for step."""

    def deserialize(self, element: ET.Element | str, metadata: ObjectMeta | None = None, clear: bool = True) -> Any:
        if clear:
            self._clear()
        source: str | None = None
        if not clear and metadata is None and not isinstance(element, str) and not len(element):
            # A property of a dynamic object (most of what a host sends): a primitive, read at once. pypsrp gets
            # there through fresh metadata and three searches for type names a childless element cannot hold.
            primitive = _PRIMITIVES.get(element.tag)
            if primitive is not None:
                return primitive(self, element)
        if isinstance(element, str):
            source = element
            try:
                # What pypsrp itself parses every message with; the text is the host's, after authentication.
                element = ET.fromstring(element)  # noqa: S314
            except ET.ParseError as err:
                log.warning("a PSRP message is not XML (%s): kept as text", err)
                return source
        metadata = metadata or ObjectMeta()
        if metadata.tag == "*":
            metadata.tag = element.tag
        # An element without children (every primitive) names no types: skip pypsrp's three searches for them.
        obj_types = self._get_types_from_obj(element) if len(element) else []
        primitive = _PRIMITIVES.get(element.tag)
        if primitive is not None:
            return primitive(self, element)

        meta: ObjectMeta | None = metadata
        if type(metadata) is ObjectMeta and metadata.object is None:
            if metadata.tag == "Obj" and len(obj_types) == 0:
                obj_types = ["System.Object"]
            meta = _known_type(obj_types)

        obj: Any
        if meta is None:
            obj = source if source is not None else ET.tostring(element, encoding="unicode")
        elif meta.tag == "Obj":
            obj = self._deserialize_obj(element, meta)
        elif meta.tag == "ObjDynamic":
            obj = self._deserialize_dynamic_obj(element, meta)
        elif meta.tag == "LST":
            obj = self._deserialize_lst(element, meta)
        elif meta.tag == "QUE":
            obj = self._deserialize_que(element)
        elif meta.tag == "STK":
            obj = self._deserialize_stk(element)
        elif meta.tag == "DCT":
            obj = self._deserialize_dct(element)
        else:
            log.warning("Unknown metadata tag type '%s', failed to deserialize object", meta.tag)
            obj = source if source is not None else ET.tostring(element, encoding="unicode")

        if element.tag == "Obj":
            self.obj[element.attrib["RefId"]] = obj
        if isinstance(obj, ComplexObject) and source is not None:
            obj._xml = source
        return obj

    def _deserialize_string(self, value: str | None) -> str:
        # Only `_xHHHH_` escapes change a string; pypsrp looks for them through a UTF-16 round trip of every one.
        if value is not None and "_x" not in value:
            return value
        result: str = super()._deserialize_string(value)
        return result


def _settle_environment(connection: WSMan) -> None:
    """Build the connection's HTTP session now, and let it stop reading the environment again on every request.

    pypsrp builds the session with what the environment says (proxies and NO_PROXY, a CA bundle) for this
    endpoint; with `trust_env` requests then scans every environment variable again on each request to resolve
    the same proxies once more. The session keeps what it was built with: its certificate validation, proxies and
    authentication are unchanged."""
    transport = connection.transport
    if transport.session is None:
        transport.session = transport._build_session()
    transport.session.trust_env = False


def _renew_connection(connection: WSMan) -> None:
    """Drop the connection's HTTP session and its message encryption: the next request opens a new connection and
    authenticates afresh (with encryption, pypsrp sets up the new context before that request)."""
    transport = connection.transport
    with contextlib.suppress(Exception):
        transport.close()
    transport.session = None
    transport.encryption = None
    _settle_environment(connection)


class _RunspacePool(RunspacePool):
    """pypsrp's RunspacePool with the codec above (`_Serializer`, `_Fragmenter`)."""

    def __init__(self, connection: WSMan) -> None:
        super().__init__(connection)
        # One serializer for both: the pool sets a session key's cipher on it (`exchange_keys`).
        self._serializer = _Serializer()
        self._fragmenter = _Fragmenter(self.connection.max_payload_size, self._serializer)


# -- the client -----------------------------------------------------------------------------------------
# A statement of a batch: one command, or a pipeline of them (`A | B`).
Statement = Command | Sequence[Command]


class HostClient:
    """One host, one runspace pool: for the life of a `with` block, or as long as a `HostSessions` pool keeps it.

    Args:
        entry: the host's inventory entry (address, auth, password reference, TLS).
        connect_timeout: seconds to establish a TCP/TLS connection.
        read_timeout: seconds to wait for any HTTP answer; must exceed `operation_timeout`.
        operation_timeout: the WSMan OperationTimeout (seconds a Receive may long-poll on the host).
        command_timeout: the default bound on one command, start to end; a command still running then is
            stopped and TransientError(HostTimeout) raised. Per call: `run(..., timeout=)`.
        report_on_close: call the session observers as it closes (a pool reports per checkout instead).

    `round_trips` counts the pool's open and close and every command invoked (for the benchmark "PSRP round
    trips per migration, by step"); `calls` counts commands by cmdlet; `pipelines` counts the pipelines the
    host's shell ran (Windows refuses a shell its 1001st, catalogue 6.3). `broken` says the session cannot be
    trusted again: a transport failure or a WSMan fault its rule says ends the session
    (activities/host_errors.py), a command stopped at its timeout, or an exception thrown into the thread in
    the middle of an exchange (an activity's cancellation).
    """

    def __init__(
        self,
        entry: HostEntry,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        operation_timeout: int = 20,
        command_timeout: float = 600.0,
        report_on_close: bool = True,
    ) -> None:
        if read_timeout <= operation_timeout:
            raise ValueError(
                f"read_timeout ({read_timeout}) must exceed operation_timeout ({operation_timeout}): the host "
                "long-polls for up to operation_timeout before it answers"
            )
        if min(connect_timeout, operation_timeout, command_timeout) <= 0:
            raise ValueError("timeouts must be positive")
        self.entry = entry
        self.host = entry.name
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.operation_timeout = operation_timeout
        self.command_timeout = command_timeout
        self.round_trips = 0
        self.calls: Counter[str] = Counter()
        self.pipelines = 0
        self.broken = False
        self._report_on_close = report_on_close
        self._usage_mark: tuple[int, Counter[str]] = (0, Counter())
        self._pool: RunspacePool | None = None
        self._password: SecretStr | None = None

    def __repr__(self) -> str:
        return f"HostClient({self.host!r}, {self.entry.scheme}://{self.entry.address}:{self.entry.effective_port})"

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    # -- context -----------------------------------------------------------------------------------------
    def _context(self) -> dict[str, Any]:
        entry = self.entry
        if entry.password_env is not None:
            ref = f"password_env {entry.password_env}"
        elif entry.password_file is not None:
            ref = f"password_file {entry.password_file}"
        else:
            ref = "no password reference"
        return {
            "user": entry.username,
            "address": entry.address,
            "port": entry.effective_port,
            "password_ref": ref,
        }

    def _secrets(self) -> tuple[str, ...]:
        return (self._password.get_secret_value(),) if self._password is not None else ()

    def _fail(self, exc: BaseException, command: str) -> SnlmError:
        return classify_exception(exc, self.host, command, context=self._context(), secrets=self._secrets())

    # -- accounting --------------------------------------------------------------------------------------
    def begin_usage(self) -> None:
        """Start counting a new use (a pool's checkout): `usage()` reports what was done since."""
        self._usage_mark = (self.round_trips, Counter(self.calls))

    def usage(self) -> SessionReport:
        """Round trips and commands since `begin_usage()` (for a standalone client: since it was made)."""
        trips, calls = self._usage_mark
        return SessionReport(self.host, self.round_trips - trips, dict(self.calls - calls))

    # -- lifecycle -----------------------------------------------------------------------------------------
    def open(self) -> HostClient:
        """Open the runspace pool (one round trip); raise the engine's error when the host cannot be reached."""
        if self._pool is not None:
            raise RuntimeError(f"{self!r} is already open")
        entry = self.entry
        if entry.auth != "kerberos" or entry.password_env is not None or entry.password_file is not None:
            self._password = entry.resolve_password()  # InventoryError (configuration) naming the field
        try:
            # pypsrp annotates these as bool / int, but hands them to requests, which takes a CA path for
            # `verify` and float timeouts.
            options: dict[str, Any] = {
                "cert_validation": entry.tls_verify,
                "connection_timeout": self.connect_timeout,
                "read_timeout": self.read_timeout,
            }
            connection = WSMan(
                entry.address,
                port=entry.effective_port,
                ssl=entry.use_tls,
                auth=entry.auth,
                username=entry.username,
                password=self._password.get_secret_value() if self._password is not None else None,
                encryption=entry.encryption,
                operation_timeout=self.operation_timeout,
                **options,
            )
            _settle_environment(connection)
            pool = _RunspacePool(connection)
            self.round_trips += 1
            pool.open()
        except Exception as exc:
            raise self._fail(exc, "opening a PowerShell session") from exc
        self._pool = pool
        self.broken = False
        self.pipelines = 0
        log.debug("opened a runspace pool on %s", self.host)
        return self

    def close(self) -> None:
        """Close the pool (one round trip; two when the host no longer reads the session's connection). A failure
        to close is logged, never raised: the work is done, and the host drops an idle shell by itself."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        self.round_trips += 1
        try:
            try:
                pool.close()
            except WinRMTransportError:
                # An HTTP status without a WSMan fault: the host answered, so it is there. The connection that
                # carried the session's security context may be gone (HTTP.sys drops a keep-alive connection idle
                # for 120 s; a broken exchange ends one), and a message sealed with that context cannot be read on
                # a new one. The shell lives on (on Windows until WinRM's idle timeout, counted against the user's
                # 25), and the host accepts its close from the same user over a new handshake: once more, so. A
                # host that does not answer is not asked twice.
                _renew_connection(pool.connection)
                self.round_trips += 1
                pool.close()
        except Exception as exc:
            log.warning("closing the PowerShell session on %s failed: %s", self.host, self._fail(exc, "close"))
        if self._report_on_close:
            _notify(self.usage())

    def __enter__(self) -> HostClient:
        return self if self._pool is not None else self.open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- commands ------------------------------------------------------------------------------------------
    def run(
        self,
        cmdlet: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        switches: Iterable[str] = (),
        arguments: Iterable[Any] = (),
        input: Iterable[Any] | None = None,
        error_action_stop: bool = False,
        check: bool = True,
        timeout: float | None = None,
    ) -> CommandResult:
        """Run one cmdlet with named `parameters` (None values left out), `switches` and positional
        `arguments`; `input` objects go down its pipeline. With `error_action_stop` the cmdlet runs with
        `-ErrorAction Stop` (its first error ends the pipeline Failed).

        Raises the engine's error for the first error record (`check=True`, the default), or returns them in
        `CommandResult.errors` (`check=False`, for probes such as "is the VM still on the source?").
        """
        command = Command(cmdlet, dict(parameters or {}), tuple(switches), tuple(arguments))
        return self.pipeline([command], input=input, error_action_stop=error_action_stop, check=check, timeout=timeout)

    def pipeline(
        self,
        commands: Sequence[Command],
        *,
        input: Iterable[Any] | None = None,
        error_action_stop: bool = False,
        check: bool = True,
        timeout: float | None = None,
    ) -> CommandResult:
        """Run several commands as ONE pipeline (`A | B`), in one round trip."""
        if not commands:
            raise ValueError("a pipeline needs at least one command")
        ps = _PowerShell(self._open_pool(), [[self._wire(command, error_action_stop) for command in commands]])
        name = " | ".join(command.cmdlet for command in commands)
        pipeline_input: Any = list(input) if input is not None else None
        self._invoke(ps, name, timeout, pipeline_input)
        records, errors = self._errors(ps, check, lambda info: name)
        return CommandResult(
            host=self.host,
            command=name,
            output=tuple(_output_value(item) for item in ps.output),
            raw_output=tuple(ps.output),
            records=records,
            errors=errors,
            state=_state_name(ps.state),
            **self._streams(ps),
        )

    def batch(
        self, statements: Sequence[Statement], *, check: bool = True, timeout: float | None = None
    ) -> list[CommandResult]:
        """Run several statements (each a Command, or a sequence of them run as a pipeline `A | B`) as ONE
        pipeline of the host, in one round trip; one CommandResult per statement, in order.

        The host sends one output stream for the whole batch, so a marker (`Write-Output -InputObject
        <random>:<index>`) goes before each statement and the outputs between two markers are the statement's.
        Error records carry no position: each goes to the statement whose cmdlets include the one that wrote it
        (the record's CategoryInfo activity, else the cmdlet its FullyQualifiedErrorId names, else its target
        for a command not found), the first such statement; one that names none goes to the statement that was
        running when the batch ended. So two statements with the same cmdlet should not be batched when errors
        are expected from them. Warnings, verbose and progress records cannot be placed either: every result
        carries all of them.

        The statements run one after the other as their own pipelines. A terminating error in one ends the
        batch for the client (state Failed) while the statements after it may still run on the host, unseen
        (Windows PowerShell's batch invocation): those read state "Unknown" with no output. So a batch holds
        reads, or changes that do not depend on each other; never a change that must not happen after a failure.

        Raises the engine's error for the first error record (`check=True`, the default), as `run` does, or
        returns each statement's records in its own result (`check=False`).
        """
        groups = [(statement,) if isinstance(statement, Command) else tuple(statement) for statement in statements]
        if not groups:
            raise ValueError("a batch needs at least one statement")
        if any(not group for group in groups):
            raise ValueError("a statement needs at least one command")
        tag = uuid.uuid4().hex
        markers = {f"{tag}:{index}": index for index in range(len(groups))}
        wire: list[_WireStatement] = []
        for marker, group in zip(markers, groups, strict=True):
            wire.append([("Write-Output", (("InputObject", marker),))])
            wire.append([self._wire(command, False) for command in group])
        ps = _PowerShell(self._open_pool(), wire)
        names = [" | ".join(command.cmdlet for command in group) for group in groups]
        self._invoke(ps, "; ".join(names), timeout, None)

        outputs: list[list[Any]] = [[] for _ in groups]
        current = -1
        for item in ps.output:
            if isinstance(item, str) and item in markers:
                current = markers[item]
            else:
                outputs[max(current, 0)].append(item)
        # `current` is the last statement seen to start: the batch ended with it (or after it, when it is the
        # last statement and all went well); what came after it, if anything ran, the client did not see.
        last = max(current, 0)
        state = _state_name(ps.state)
        batch_name = "; ".join(names)

        def name_of(info: ErrorInfo) -> str:
            index = _statement_of(info, groups)
            return batch_name if index is None else names[index]

        records, errors = self._errors(ps, check, name_of)
        placed = [where if (where := _statement_of(info, groups)) is not None else last for info in records]
        streams = self._streams(ps)
        results = []
        for index, (name, output) in enumerate(zip(names, outputs, strict=True)):
            mine = [i for i, where in enumerate(placed) if where == index]
            if current < 0 or index > last:
                statement_state = "Unknown"
            elif index < last:
                statement_state = "Completed"  # the next one started: this one did not end the batch
            else:
                statement_state = state if state != "Completed" or index == len(groups) - 1 else "Unknown"
            results.append(
                CommandResult(
                    host=self.host,
                    command=name,
                    output=tuple(_output_value(item) for item in output),
                    raw_output=tuple(output),
                    records=tuple(records[i] for i in mine),
                    errors=tuple(errors[i] for i in mine),
                    state=statement_state,
                    **streams,
                )
            )
        return results

    # -- the wire ------------------------------------------------------------------------------------------
    def _open_pool(self) -> RunspacePool:
        if self._pool is None:
            raise RuntimeError(f"{self!r} is not open: use it as a context manager")
        return self._pool

    def _wire(self, command: Command, error_action_stop: bool) -> _WireCommand:
        """The command as the wire carries it: parameters in order (None values left out, `NULL` as $null), then
        switches, positional arguments, and `-ErrorAction Stop` when asked."""
        arguments: list[tuple[str | None, Any]] = [
            (parameter, None if value is NULL else value)
            for parameter, value in command.parameters.items()
            if value is not None
        ]
        arguments += [(switch, None) for switch in command.switches]
        arguments += [(None, argument) for argument in command.arguments]
        if error_action_stop:
            arguments.append(("ErrorAction", "Stop"))
        self.calls[command.cmdlet] += 1
        return command.cmdlet, tuple(arguments)

    def _invoke(self, ps: PowerShell, name: str, timeout: float | None, pipeline_input: Any) -> None:
        """Run `ps` to its end within the timeout (stopped and HostTimeout past it)."""
        self.round_trips += 1
        self.pipelines += 1
        limit = self.command_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        try:
            ps.begin_invoke(input=pipeline_input)
            while ps.state == PSInvocationState.RUNNING:
                if time.monotonic() > deadline:
                    self._stop(ps)
                    # A stopped pipeline may still be winding down on the host: do not run the next on this shell.
                    self.broken = True
                    raise TransientError(
                        f"{name} on {self.host}: still running after {limit:g} s; stopped",
                        error_type=c.HOST_TIMEOUT,
                        remedy="the host is slow or the command long: retried with backoff",
                        details={"host": self.host, "command": name, "timeout_seconds": limit},
                    )
                ps.poll_invoke()
        except SnlmError:
            raise
        except Exception as exc:
            self.broken = self.broken or breaks_session(exc)
            raise self._fail(exc, name) from exc
        except BaseException:
            # Thrown into this thread mid-exchange (an activity's cancellation): the host's answer is unread.
            self.broken = True
            raise
        finally:
            # pypsrp keeps every pipeline of a pool in its registry (with its output and streams) until the pool
            # closes: on a reused session that is every answer of up to `max_pipelines` commands per session, about
            # 3 MiB per move. The answer is in `ps` now, and nothing goes on the wire: pypsrp's own invoke sends
            # nothing more for an ended pipeline either.
            ps.runspace_pool.pipelines.pop(ps.id, None)

    @staticmethod
    def _stop(ps: PowerShell) -> None:
        try:
            ps.stop()
        except Exception as exc:
            log.debug("stopping a pipeline failed: %s", type(exc).__name__)

    def _errors(
        self, ps: PowerShell, check: bool, name_of: Callable[[ErrorInfo], str]
    ) -> tuple[tuple[ErrorInfo, ...], tuple[SnlmError, ...]]:
        """The pipeline's error records and the engine's error for each (named after the cmdlet that wrote it,
        else `name_of(record)`); with `check`, the first one raised."""
        records = tuple(ErrorInfo.from_record(record) for record in ps.streams.error)
        if ps.had_errors and not records:
            # Failed without a record: still a failure (pypsrp sets had_errors only for state Failed).
            records = (ErrorInfo(message=f"the pipeline ended {_state_name(ps.state)} without an error record"),)
        errors = tuple(
            classify(info, self.host, info.activity or name_of(info), context=self._context(), secrets=self._secrets())
            for info in records
        )
        if errors and check:
            first = errors[0]
            if len(errors) > 1:
                first.details["other_errors"] = [str(error) for error in errors[1:5]]
            raise first
        return records, errors

    @staticmethod
    def _streams(ps: PowerShell) -> dict[str, Any]:
        return {
            "warnings": tuple(str(getattr(record, "message", record)) for record in ps.streams.warning),
            "verbose": tuple(str(getattr(record, "message", record)) for record in ps.streams.verbose),
            "progress": tuple(_progress(record) for record in ps.streams.progress),
        }


def _compact(name: str) -> str:
    return name.replace("-", "").lower()


def _statement_of(info: ErrorInfo, groups: Sequence[Sequence[Command]]) -> int | None:
    """The statement of a batch that wrote an error record (see `HostClient.batch`), None when it names none."""
    cmdlets = [{command.cmdlet.lower() for command in group} for group in groups]
    # "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM" names the cmdlet's class, GetVM.
    fq_class = info.fq_error.rsplit(",", 1)[-1].rsplit(".", 1)[-1].lower() if "," in info.fq_error else ""
    clues: list[Callable[[set[str]], bool]] = [
        lambda names: bool(info.activity) and info.activity.lower() in names,
        lambda names: bool(fq_class) and fq_class in {_compact(name) for name in names},
        lambda names: bool(info.target) and info.target.lower() in names,
    ]
    for clue in clues:
        for index, names in enumerate(cmdlets):
            if clue(names):
                return index
    return None


# -- the worker's sessions --------------------------------------------------------------------------------------
def _close_pools(pools: Mapping[str, _HostPool]) -> None:
    for pool in pools.values():
        idle, pool.idle = pool.idle, []
        for pooled in idle:
            pooled.client.close()


# The most shells Windows lets one user hold on a host by default (MaxShellsPerUser of the PowerShell endpoint,
# catalogue 6.3); a worker's pool stays within it by construction.
MAX_SHELLS_PER_USER: Final = 25
# HTTP.sys closes a keep-alive connection idle for 120 s; with NTLM or CredSSP message encryption that
# connection carried the session's security context (reference/psrp-wire-notes.md), so a session idle that long
# is dead whatever `idle_seconds` says.
_KEEPALIVE_SECONDS: Final = 110.0


@dataclass(eq=False)
class _Pooled:
    client: HostClient
    generation: int
    idle_since: float = 0.0


@dataclass
class _HostPool:
    idle: list[_Pooled] = field(default_factory=list)  # the most recently returned last
    busy: int = 0
    opening: int = 0

    @property
    def size(self) -> int:
        return len(self.idle) + self.busy + self.opening


@dataclass(frozen=True)
class SessionStats:
    """Counts of a HostSessions pool since it was made.

    Attributes:
        checkouts: sessions handed out.
        opened: sessions opened (a checkout that found none idle).
        reused: checkouts served by a session already open.
        replaced: sessions closed because they ran `max_pipelines` pipelines.
        discarded: sessions closed because they broke (or a sibling on the same host broke).
        idle_closed: sessions closed because they sat idle past `idle_seconds`.
        waited: checkouts that had to wait for a session to come back.
        open: sessions open now, by host (idle and checked out).
        checked_out: sessions checked out now, by host.
    """

    checkouts: int
    opened: int
    reused: int
    replaced: int
    discarded: int
    idle_closed: int
    waited: int
    open: dict[str, int]
    checked_out: dict[str, int]


class HostSessions:
    """The worker's open sessions (HostClients), per host, reused across activities.

    `with sessions.session("HV01") as client:` checks out an open session of that host for the block alone (no
    other thread or block uses it meanwhile), opening one when none is idle and fewer than `per_host` exist,
    else waiting for one to come back, up to `wait_seconds` (then TransientError HostBusy). Opening is the
    checkout's first round trip; a reused session costs none.

    When the block ends the session goes back to the pool, unless it is `broken` (a transport failure, a WSMan
    fault such as the shell being gone, a command stopped at its timeout: HostClient says which): then it is
    closed, best effort, with every idle session of that host (what broke one, a WinRM restart, broke them
    all), and the next checkout opens a fresh one. An error record from the host (a VM not found, a failed
    move) leaves the session as good as it was.

    Args:
        inventory: the hosts (addresses and credential references); sessions are kept per inventory entry,
            so a NetBIOS name and its FQDN share them.
        per_host: the most sessions open on one host at once; at most MAX_SHELLS_PER_USER (25), the shells
            Windows lets one user hold by default.
        idle_seconds: a session idle this long is closed, as sessions are checked out and in and by
            `close_idle()` (and none idle for 110 s or more is reused: HTTP.sys has dropped its connection).
        max_pipelines: a session that has run this many pipelines is closed when it comes back (Windows
            refuses a shell its 1001st pipeline by default, catalogue 6.3): keep the gap to the host's quota
            above the most pipelines one checkout runs.
        wait_seconds: how long a checkout waits for a session of a host whose `per_host` are all checked out.
        client_options: HostClient keyword arguments (connect_timeout, read_timeout, operation_timeout,
            command_timeout).

    Round trips are reported to the session observers at the end of each checkout (`add_session_observer`).
    `close_all()` closes every session (one checked out now as it comes back); the worker calls it at shutdown.
    """

    def __init__(
        self,
        inventory: Inventory,
        *,
        per_host: int = 4,
        idle_seconds: float = 120.0,
        max_pipelines: int = 900,
        wait_seconds: float = 60.0,
        **client_options: Any,
    ) -> None:
        if not 1 <= per_host <= MAX_SHELLS_PER_USER:
            raise ValueError(
                f"per_host ({per_host}) must be between 1 and {MAX_SHELLS_PER_USER} (Windows' default "
                "MaxShellsPerUser: more sessions than that are refused by the host)"
            )
        if idle_seconds <= 0 or wait_seconds < 0 or max_pipelines < 1:
            raise ValueError("idle_seconds must be positive, wait_seconds not negative, max_pipelines at least 1")
        # Fail now on options HostClient refuses, not at the first checkout.
        HostClient(next(iter(inventory.hosts.values())), **client_options)
        self.inventory = inventory
        self.per_host = per_host
        self.idle_seconds = idle_seconds
        self.max_pipelines = max_pipelines
        self.wait_seconds = wait_seconds
        self.client_options: Mapping[str, Any] = dict(client_options)
        self._pools: dict[str, _HostPool] = {}
        self._generation = 0
        self._counts: Counter[str] = Counter()
        self._lock = threading.Condition()
        # A pool nobody holds any more (an activities object made for one call) closes its shells, as a file
        # object does: left open they would count against the host's MaxShellsPerUser for hours. Not at exit:
        # the hosts may be gone by then, and Windows drops an idle shell by itself.
        finalizer = weakref.finalize(self, _close_pools, self._pools)
        finalizer.atexit = False

    def __repr__(self) -> str:
        return f"HostSessions(per_host={self.per_host}, hosts={sorted(self._pools)})"

    # -- checkout ------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def session(self, host: str) -> Iterator[HostClient]:
        """An open session of `host` (a name the inventory knows), for this block alone."""
        entry = self.inventory.host(host)
        pooled = self._checkout(entry)
        try:
            yield pooled.client
        finally:
            self._checkin(entry.name, pooled)

    def _checkout(self, entry: HostEntry) -> _Pooled:
        to_close: list[HostClient] = []
        deadline = time.monotonic() + self.wait_seconds
        waited = False
        pooled: _Pooled | None = None
        busy: TransientError | None = None
        with self._lock:
            pool = self._pools.setdefault(entry.name, _HostPool())
            while True:
                to_close += self._sweep_locked()
                if pool.idle:
                    pooled = pool.idle.pop()
                    pool.busy += 1
                    self._counts["reused"] += 1
                    break
                if pool.size < self.per_host:
                    pool.opening += 1
                    pooled = None
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    busy = TransientError(
                        f"{entry.name}: all {self.per_host} PowerShell sessions of this worker are in use "
                        f"(waited {self.wait_seconds:g} s)",
                        error_type=c.HOST_BUSY,
                        remedy="the host is busy with this worker's other activities: retried with backoff "
                        "(or raise per_host, up to the host's MaxShellsPerUser)",
                        details={"host": entry.name, "per_host": self.per_host, "wait_seconds": self.wait_seconds},
                    )
                    break
                if not waited:
                    waited = True
                    self._counts["waited"] += 1
                self._lock.wait(remaining)
            if busy is None:
                self._counts["checkouts"] += 1
            generation = self._generation
        self._close(to_close)  # never under the lock: each close is a round trip
        if busy is not None:
            raise busy
        if pooled is not None:
            pooled.client.begin_usage()
            return pooled
        client = HostClient(entry, report_on_close=False, **self.client_options)
        try:
            client.open()
        except BaseException:
            with self._lock:
                pool.opening -= 1
                self._lock.notify()
            if client.round_trips:
                _notify(client.usage())
            raise
        with self._lock:
            pool.opening -= 1
            pool.busy += 1
            self._counts["opened"] += 1
        return _Pooled(client, generation)

    def _checkin(self, host: str, pooled: _Pooled) -> None:
        client = pooled.client
        report = client.usage()
        to_close: list[HostClient] = []
        with self._lock:
            pool = self._pools[host]
            pool.busy -= 1
            if client.broken or not client.is_open:
                self._counts["discarded"] += 1 + len(pool.idle)
                to_close += [client, *(sibling.client for sibling in pool.idle)]
                pool.idle.clear()
            elif client.pipelines >= self.max_pipelines:
                self._counts["replaced"] += 1
                to_close.append(client)
            elif pooled.generation < self._generation:
                to_close.append(client)  # close_all() ran while it was out
            else:
                pooled.idle_since = time.monotonic()
                pool.idle.append(pooled)
            to_close += self._sweep_locked()
            self._lock.notify_all()
        if report.round_trips:
            _notify(report)
        self._close(to_close)

    # -- closing -------------------------------------------------------------------------------------------
    def _sweep_locked(self) -> list[HostClient]:
        """Take the sessions idle too long out of the pool (closed by the caller, outside the lock)."""
        limit = min(self.idle_seconds, _KEEPALIVE_SECONDS)
        now = time.monotonic()
        stale: list[HostClient] = []
        for pool in self._pools.values():
            fresh = [pooled for pooled in pool.idle if now - pooled.idle_since < limit]
            stale += [pooled.client for pooled in pool.idle if now - pooled.idle_since >= limit]
            pool.idle[:] = fresh
        self._counts["idle_closed"] += len(stale)
        return stale

    @staticmethod
    def _close(clients: Iterable[HostClient]) -> None:
        for client in clients:
            client.close()  # logs a failure, never raises

    def close_idle(self) -> int:
        """Close the sessions idle for `idle_seconds` or more; returns how many."""
        with self._lock:
            stale = self._sweep_locked()
            self._lock.notify_all()
        self._close(stale)
        return len(stale)

    def close_all(self) -> int:
        """Close every idle session now and every checked-out one as it comes back; returns how many were
        closed now. The pool stays usable: a later checkout opens a new session."""
        with self._lock:
            self._generation += 1
            idle = [pooled.client for pool in self._pools.values() for pooled in pool.idle]
            for pool in self._pools.values():
                pool.idle.clear()
            self._lock.notify_all()
        self._close(idle)
        return len(idle)

    # -- figures -------------------------------------------------------------------------------------------
    def stats(self) -> SessionStats:
        with self._lock:
            counts = self._counts
            return SessionStats(
                checkouts=counts["checkouts"],
                opened=counts["opened"],
                reused=counts["reused"],
                replaced=counts["replaced"],
                discarded=counts["discarded"],
                idle_closed=counts["idle_closed"],
                waited=counts["waited"],
                open={host: len(pool.idle) + pool.busy for host, pool in self._pools.items()},
                checked_out={host: pool.busy for host, pool in self._pools.items()},
            )


def _state_name(state: int) -> str:
    return {
        PSInvocationState.COMPLETED: "Completed",
        PSInvocationState.FAILED: "Failed",
        PSInvocationState.STOPPED: "Stopped",
    }.get(state, str(state))


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _progress(record: Any) -> ProgressInfo:
    return ProgressInfo(
        activity=str(getattr(record, "activity", "") or ""),
        description=str(getattr(record, "description", "") or ""),
        percent_complete=_int(getattr(record, "percent_complete", None), -1),
        record_type=str(getattr(record, "progress_type", "") or ""),
        current_operation=str(getattr(record, "current_operation", "") or ""),
        seconds_remaining=_int(getattr(record, "seconds_remaining", None), -1),
    )
