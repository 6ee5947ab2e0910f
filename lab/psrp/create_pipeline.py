"""CREATE_PIPELINE read straight into the lab's statements, without building psrpcore's objects for its frame.

A CREATE_PIPELINE message is mostly frame: for every command eight merge enums (each an object with its type
names and ToString), its name, IsScript, UseLocalScope, then the pipeline's own enums and host info. psrpcore's
generic deserializer builds a PSObject with note properties for every one of them, and then
`PowerShell.FromPSObjectForRemoting` walks those objects again (twice: psrpcore's server and the lab each ask for
`CreatePipelineEvent.pipeline`). py-spy of the lab under `benchmarks.saga_bench` put that at a third of the lab's
CPU per migration: 2.5-10 ms per message for the engine's batches of 4 to 21 commands, 34 ms for one preflight.

`read_create_pipeline` walks the frame as XML and hands only each argument's value to psrpcore's deserializer
(one serializer for the whole message, its type-name table filled from every `<TN>` of the message first, so a
value whose `<TNRef>` points at a type named earlier reads as it would in the whole message). It reads what
`parse_statements` takes from psrpcore's `PowerShell`: per statement its commands, each with its name, its
parameters in order (a named parameter with a null value is a switch), whether it is a script, and whether its
errors merge into its output; and whether the pipeline takes no input. Anything it does not expect (another
shape of frame, a `<Ref>` to an object outside a value, a value psrpcore cannot read alone) returns None and the
caller takes psrpcore's path, so the lab never answers differently for the shortcut: tests/lab/psrp/
test_create_pipeline.py holds both paths equal on the engine's own messages and on psrpcore's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree

from psrpcore.types import PipelineResultTypes
from psrpcore.types import _serializer as serializer

from lab.commands import CommandSpec, ParameterSpec

__all__ = ["ParsedPipeline", "read_create_pipeline"]

_OUTPUT = int(PipelineResultTypes.Output)
_ERROR = int(PipelineResultTypes.Error)


@dataclass(frozen=True)
class ParsedPipeline:
    """What the lab runs of a CREATE_PIPELINE: its statements, and whether input follows."""

    statements: list[list[CommandSpec]]
    no_input: bool


class _Unexpected(Exception):
    """The message is not of the shape read here: psrpcore's own path reads it."""


def _members(obj: ElementTree.Element) -> dict[str, ElementTree.Element]:
    """An `<Obj>`'s members by name (`<MS>`, the extended properties psrpcore reads as note properties)."""
    ms = obj.find("MS")
    if ms is None:
        raise _Unexpected("no MS")
    members: dict[str, ElementTree.Element] = {}
    for element in ms:
        name = element.attrib.get("N")
        if name is None:
            raise _Unexpected("a member without a name")
        members[serializer._deserialize_string(name)] = element  # the last of duplicates wins, as in psrpcore
    return members


def _list(element: ElementTree.Element | None) -> list[ElementTree.Element]:
    if element is None or element.tag != "Obj":
        raise _Unexpected("not a list object")
    items = element.find("LST")
    if items is None:
        raise _Unexpected("no LST")
    return list(items)


def _bool(element: ElementTree.Element | None, default: bool = False) -> bool:
    if element is None or element.tag == "Nil":
        return default
    if element.tag != "B":
        raise _Unexpected("not a boolean")
    return (element.text or "").strip().lower() == "true"


def _enum(element: ElementTree.Element | None) -> int:
    """A PipelineResultTypes member: an `<Obj>` with its value as `<I32>` (absent: None, 0)."""
    if element is None or element.tag == "Nil":
        return 0
    if element.tag != "Obj":
        raise _Unexpected("not an enum object")
    value = element.find("I32")
    if value is None:
        raise _Unexpected("an enum without I32")
    return int(value.text or "0")


def _string(element: ElementTree.Element | None) -> str | None:
    if element is None or element.tag == "Nil":
        return None
    if element.tag != "S":
        raise _Unexpected("not a string")
    return serializer._deserialize_string(element.text or "")


def _command(obj: ElementTree.Element, values: serializer._Serializer) -> CommandSpec:
    members = _members(obj)
    name = _string(members.get("Cmd"))
    if name is None:
        raise _Unexpected("a command without Cmd")
    parameters: list[ParameterSpec] = []
    for argument in _list(members.get("Args")):
        if argument.tag != "Obj":
            raise _Unexpected("an argument that is not an object")
        pair = _members(argument)
        key, raw = pair.get("N"), pair.get("V")
        parameter = _string(key)
        value = values.deserialize(raw) if raw is not None else None
        if parameter is not None and value is None:
            parameters.append(ParameterSpec(name=parameter, value=True, is_switch=True))
        else:
            parameters.append(ParameterSpec(name=parameter, value=value))
    merge_error = _enum(members.get("MergeError"))
    merge_my, merge_to = _enum(members.get("MergeMyResult")), _enum(members.get("MergeToResult"))
    return CommandSpec(
        name=name,
        parameters=tuple(parameters),
        is_script=_bool(members.get("IsScript")),
        merge_errors_to_output=merge_error == _OUTPUT or (merge_my == _ERROR and merge_to == _OUTPUT),
    )


def read_create_pipeline(data: bytes, cipher: Any, **kwargs: Any) -> ParsedPipeline | None:
    """The statements of a CREATE_PIPELINE message's `data`, or None when psrpcore's path must read it.

    `cipher` and `kwargs` are what psrpcore's own deserializer is given (the pool's session key for a
    SecureString value, the peers' capabilities).
    """
    try:
        root = ElementTree.fromstring(data)  # noqa: S314  (the same bytes psrpcore parses with ElementTree)
        values = serializer._Serializer(cipher, **kwargs)
        for tn in root.iter("TN"):
            values._tn_ref_map[tn.attrib["RefId"]] = [t.text or "" for t in tn.findall("T")]
        if root.tag != "Obj":
            raise _Unexpected("not an object")
        members = _members(root)
        powershell = members.get("PowerShell")
        if powershell is None or powershell.tag != "Obj":
            raise _Unexpected("no PowerShell")
        frame = _members(powershell)
        extra = frame.get("ExtraCmds")
        if extra is not None and extra.tag != "Nil":
            lists = [_list(_members(statement).get("Cmds")) for statement in _list(extra)]
        else:
            lists = [_list(frame.get("Cmds"))]
        if not all(lists):
            raise _Unexpected("an empty statement")  # psrpcore's path says what it makes of one
        statements = [[_command(command, values) for command in commands] for commands in lists]
        return ParsedPipeline(statements, _bool(members.get("NoInput")))
    except (_Unexpected, KeyError, ValueError, TypeError, AttributeError, ElementTree.ParseError):
        return None
