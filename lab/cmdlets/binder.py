"""PowerShell-like parameter binding from `CommandSpec.parameters` (catalogue 2.6).

What PowerShell's binder does that a client can notice: names ignore case, a unique prefix of a parameter
name or alias is enough (`-Dest`), positional arguments fill positional parameters in order, parameter
sets must resolve to one, mandatory parameters must be present, values convert to the parameter's type
(enum names listed when they do not), and `ValidateNotNullOrEmpty` holds. Every failure is a
ParameterBindingException record that terminates the pipeline before any command runs.

Texts are PowerShell's ParameterBinderStrings (Windows PowerShell 5.1 wording).
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from psrpcore.types import PSEnumBase

from lab.cmdlets import errors
from lab.cmdlets.psobj import dotnet_name, enum_from_name, enum_names, is_type
from lab.commands import CommandSpec, ErrorCategory, TerminatingError

ALL_SETS = "__AllParameterSets"


class Kind(enum.Enum):
    STRING = "System.String"
    STRINGS = "System.String[]"
    INT32 = "System.Int32"
    INT64 = "System.Int64"
    UINT32 = "System.UInt32"
    BOOL = "System.Boolean"
    SWITCH = "System.Management.Automation.SwitchParameter"
    ENUM = "enum"
    HASHTABLE = "System.Collections.Hashtable"
    HASHTABLES = "System.Collections.Hashtable[]"
    OBJECT = "object"  # one object of `type_name`
    OBJECTS = "objects"  # an array of `type_name`
    GUIDS = "System.Guid[]"
    ANY = "System.Object"
    ANYS = "System.Object[]"


_INT_RANGES: dict[Kind, tuple[int, int, str]] = {
    Kind.INT32: (-(2**31), 2**31 - 1, "an Int32"),
    Kind.INT64: (-(2**63), 2**63 - 1, "an Int64"),
    Kind.UINT32: (0, 2**32 - 1, "a UInt32"),
}


@dataclass(frozen=True)
class Param:
    """One parameter of a cmdlet, as its declaration in the real module states it."""

    name: str
    kind: Kind = Kind.STRING
    aliases: tuple[str, ...] = ()
    position: int | None = None
    mandatory: bool = False
    sets: tuple[str, ...] = ()  # empty: every parameter set
    pipeline: bool = False  # ValueFromPipeline
    type_name: str = ""  # .NET type of OBJECT / OBJECTS parameters
    enum: type[PSEnumBase] | None = None
    not_null_or_empty: bool = False

    @property
    def type_display(self) -> str:
        if self.kind is Kind.ENUM and self.enum is not None:
            return str(self.enum.PSObject.type_names[0])
        if self.kind is Kind.OBJECT:
            return self.type_name
        if self.kind is Kind.OBJECTS:
            return f"{self.type_name}[]"
        return self.kind.value


@dataclass(frozen=True)
class CmdletInfo:
    name: str
    cmdlet_class: str  # the second half of every FullyQualifiedErrorId this command raises
    params: tuple[Param, ...] = ()
    default_set: str | None = None
    should_process: bool = False  # adds -WhatIf / -Confirm
    native: bool = False  # an executable (klist): arguments are passed through raw, no binding

    def sets(self) -> list[str]:
        names: list[str] = []
        for p in self.params:
            for s in p.sets:
                if s not in names:
                    names.append(s)
        return names or [ALL_SETS]


class ActionPreference(enum.IntEnum):
    SilentlyContinue = 0
    Stop = 1
    Continue = 2
    Inquire = 3
    Ignore = 4
    Suspend = 5


COMMON_PARAMS: tuple[Param, ...] = (
    Param("Verbose", Kind.SWITCH, aliases=("vb",)),
    Param("Debug", Kind.SWITCH, aliases=("db",)),
    Param("ErrorAction", Kind.ANY, aliases=("ea",)),
    Param("WarningAction", Kind.ANY, aliases=("wa",)),
    Param("InformationAction", Kind.ANY, aliases=("infa",)),
    Param("ErrorVariable", Kind.STRING, aliases=("ev",)),
    Param("WarningVariable", Kind.STRING, aliases=("wv",)),
    Param("InformationVariable", Kind.STRING, aliases=("iv",)),
    Param("OutVariable", Kind.STRING, aliases=("ov",)),
    Param("OutBuffer", Kind.INT32, aliases=("ob",)),
    Param("PipelineVariable", Kind.STRING, aliases=("pv",)),
)
SHOULD_PROCESS_PARAMS: tuple[Param, ...] = (
    Param("WhatIf", Kind.SWITCH, aliases=("wi",)),
    Param("Confirm", Kind.SWITCH, aliases=("cf",)),
)
_COMMON_NAMES = {p.name.lower() for p in COMMON_PARAMS + SHOULD_PROCESS_PARAMS}


@dataclass
class Bound:
    """The result of binding: canonical parameter name → converted value."""

    info: CmdletInfo
    values: dict[str, Any] = field(default_factory=dict)
    parameter_set: str = ALL_SETS
    pipeline_param: str | None = None
    error_action: ActionPreference = ActionPreference.Continue
    warning_action: ActionPreference = ActionPreference.Continue
    raw_args: list[str] = field(default_factory=list)  # native commands only

    def has(self, name: str) -> bool:
        return name in self.values

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)

    def switch(self, name: str) -> bool:
        return bool(self.values.get(name, False))


class _Binder:
    def __init__(self, info: CmdletInfo) -> None:
        self.info = info
        self.all_params: list[Param] = list(info.params) + list(COMMON_PARAMS)
        if info.should_process:
            self.all_params += list(SHOULD_PROCESS_PARAMS)

    # -- errors ----------------------------------------------------------------------------------------
    def fail(
        self,
        error_id: str,
        message: str,
        category: ErrorCategory = ErrorCategory.InvalidArgument,
        exception_types: tuple[str, ...] = errors.PARAMETER_BINDING_EXCEPTION,
    ) -> TerminatingError:
        return errors.binding_error(
            self.info.name,
            self.info.cmdlet_class,
            error_id,
            message,
            category=category,
            exception_types=exception_types,
        )

    def cannot_convert(self, param: Param, value: Any, inner: str) -> TerminatingError:
        return self.fail(
            "CannotConvertArgumentNoMessage",
            f"Cannot bind parameter '{param.name}'. Cannot convert value \"{_display(value)}\" to type "
            f'"{param.type_display}". Error: "{inner}"',
        )

    def cannot_convert_type(self, param: Param, value: Any, target: str) -> TerminatingError:
        return self.fail(
            "CannotConvertArgumentNoMessage",
            f"Cannot bind parameter '{param.name}'. Cannot convert the \"{_display(value)}\" value of type "
            f'"{_dotnet_type(value)}" to type "{target}".',
        )

    # -- lookup ----------------------------------------------------------------------------------------
    def lookup(self, raw_name: str) -> Param:
        name = raw_name.lstrip("-").rstrip(":")
        lowered = name.lower()
        for p in self.all_params:
            if p.name.lower() == lowered or lowered in (a.lower() for a in p.aliases):
                return p
        matches: list[Param] = []
        for p in self.all_params:
            prefixed = p.name.lower().startswith(lowered) or any(a.lower().startswith(lowered) for a in p.aliases)
            if prefixed and p not in matches:
                matches.append(p)
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise self.fail(
                "NamedParameterNotFound", f"A parameter cannot be found that matches parameter name '{name}'."
            )
        possible = "".join(f" -{p.name}" for p in matches)
        raise self.fail(
            "AmbiguousParameter",
            f"Parameter cannot be processed because the parameter name '{name}' is ambiguous. "
            f"Possible matches include:{possible}.",
        )

    # -- conversion ------------------------------------------------------------------------------------
    def convert(self, param: Param, value: Any) -> Any:
        kind = param.kind
        if kind is Kind.ANY:
            return value
        if kind is Kind.ANYS:
            return list(value) if isinstance(value, list | tuple) else [value]
        if kind is Kind.SWITCH:
            if value is None or isinstance(value, bool):
                return True if value is None else value
            if isinstance(value, int):
                return value != 0
            raise self.transformation(param, value, "System.Management.Automation.SwitchParameter")
        if kind is Kind.BOOL:
            if isinstance(value, bool):
                return value
            if isinstance(value, int):
                return value != 0
            raise self.transformation(param, value, "System.Boolean")
        if value is None:
            return None
        if kind is Kind.STRING:
            if isinstance(value, list | tuple):
                return " ".join(_to_string(v) for v in value)
            return _to_string(value)
        if kind is Kind.STRINGS:
            items = value if isinstance(value, list | tuple) else [value]
            return [None if v is None else _to_string(v) for v in items]
        if kind in _INT_RANGES:
            return self.to_int(param, value)
        if kind is Kind.ENUM:
            return self.to_enum(param, value)
        if kind in (Kind.HASHTABLE, Kind.HASHTABLES):
            items = value if isinstance(value, list | tuple) else [value]
            for item in items:
                if not isinstance(item, dict):
                    raise self.cannot_convert_type(param, item, "System.Collections.Hashtable")
            if kind is Kind.HASHTABLE:
                if len(items) != 1:
                    raise self.cannot_convert_type(param, value, "System.Collections.Hashtable")
                return items[0]
            return list(items)
        if kind in (Kind.OBJECT, Kind.OBJECTS):
            items = value if isinstance(value, list | tuple) else [value]
            for item in items:
                if not is_type(item, param.type_name):
                    raise self.cannot_convert_type(param, item, param.type_name)
            if kind is Kind.OBJECT:
                if len(items) != 1:
                    raise self.cannot_convert_type(param, value, param.type_name)
                return items[0]
            return list(items)
        if kind is Kind.GUIDS:
            items = value if isinstance(value, list | tuple) else [value]
            out: list[uuid.UUID] = []
            for item in items:
                try:
                    out.append(item if isinstance(item, uuid.UUID) else uuid.UUID(str(item).strip("{}")))
                except ValueError:
                    raise self.cannot_convert(
                        param,
                        item,
                        "Guid should contain 32 digits with 4 dashes (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx).",
                    ) from None
            return out
        return value  # pragma: no cover - every kind is handled above

    def transformation(self, param: Param, value: Any, target: str) -> TerminatingError:
        return self.fail(
            "ParameterArgumentTransformationError",
            f"Cannot process argument transformation on parameter '{param.name}'. Cannot convert value "
            f'"{_dotnet_type(value)}" to type "{target}". Boolean parameters accept only Boolean values and '
            "numbers, such as $True, $False, 1 or 0.",
            ErrorCategory.InvalidData,
            errors.PARAMETER_TRANSFORMATION_EXCEPTION,
        )

    def to_int(self, param: Param, value: Any) -> int:
        low, high, article = _INT_RANGES[param.kind]
        if isinstance(value, list | tuple):
            raise self.cannot_convert_type(param, value, param.kind.value)
        if isinstance(value, (bool, int)):
            number = int(value)
        else:
            text = _to_string(value).strip()
            try:
                number = int(text, 16) if text.lower().startswith("0x") else int(text)
            except ValueError:
                raise self.cannot_convert(param, value, "Input string was not in a correct format.") from None
        if not low <= number <= high:
            raise self.cannot_convert(param, value, f"Value was either too large or too small for {article}.")
        return number

    def to_enum(self, param: Param, value: Any) -> PSEnumBase:
        assert param.enum is not None
        enum_type = param.enum
        if isinstance(value, enum_type):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            for member in enum_type:
                if int(member) == int(value):
                    return member
        text = _to_string(value)
        found = enum_from_name(enum_type, text)
        if found is None:
            listing = ", ".join(enum_names(enum_type))
            raise self.cannot_convert(
                param,
                value,
                f"Unable to match the identifier name {text} to a valid enumerator name. Specify one of the "
                f"following enumerator names and try again:\r\n{listing}",
            )
        return found

    def action_preference(self, param: Param, value: Any) -> ActionPreference:
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                return ActionPreference(int(value))
            except ValueError:
                pass
        text = _to_string(value).strip()
        for member in ActionPreference:
            if member.name.lower() == text.lower():
                return member
        listing = ", ".join(m.name for m in ActionPreference)
        raise self.fail(
            "CannotConvertArgumentNoMessage",
            f"Cannot bind parameter '{param.name}'. Cannot convert value \"{text}\" to type "
            '"System.Management.Automation.ActionPreference". Error: "Unable to match the identifier name '
            f"{text} to a valid enumerator name. Specify one of the following enumerator names and try "
            f'again:\r\n{listing}"',
        )

    # -- binding ---------------------------------------------------------------------------------------
    def bind(self, spec: CommandSpec, pipeline_input: Sequence[Any]) -> Bound:
        bound = Bound(self.info)
        if self.info.native:
            for p in spec.parameters:
                if p.name is not None:
                    bound.raw_args.append(f"-{p.name.lstrip('-')}")
                    if not p.is_switch and p.value is not None:
                        bound.raw_args.append(_to_string(p.value))
                elif p.value is not None:
                    bound.raw_args.append(_to_string(p.value))
            return bound

        positional: list[Any] = []
        for item in spec.parameters:
            if item.name is None:
                positional.append(item.value)
                continue
            param = self.lookup(item.name)
            if param.name in bound.values:
                raise self.fail(
                    "ParameterAlreadyBound",
                    f"Cannot bind parameter because parameter '{param.name}' is specified more than once. To provide "
                    "multiple values to parameters that can accept multiple values, use the array syntax. For example, "
                    '"-parameter value1,value2,value3".',
                )
            value = item.value
            if item.is_switch and param.kind is not Kind.SWITCH:
                # Over PSRP a named parameter with a <Nil/> value arrives as a switch; PowerShell binds it as
                # `-Name:$null` (Set-VMDvdDrive -Path $null ejects the media).
                value = None
            self.set_value(bound, param, value)

        candidates = self.candidate_sets(bound)
        for value in positional:
            slot = self.next_positional(bound, candidates)
            if slot is None:
                raise self.fail(
                    "PositionalParameterNotFound",
                    f"A positional parameter cannot be found that accepts argument '{_display(value)}'.",
                )
            self.set_value(bound, slot, value)
            candidates = self.candidate_sets(bound)

        if pipeline_input:
            self.bind_pipeline(bound, candidates, pipeline_input)
            candidates = self.candidate_sets(bound)

        bound.parameter_set = self.choose_set(bound, candidates)
        missing = [
            p.name
            for p in self.info.params
            if p.mandatory and self.in_set(p, bound.parameter_set) and p.name not in bound.values
        ]
        if missing:
            raise self.fail(
                "MissingMandatoryParameter",
                "Cannot process command because of one or more missing mandatory parameters: "
                + " ".join(missing)
                + ".",
            )
        return bound

    def set_value(self, bound: Bound, param: Param, value: Any) -> None:
        if param.name in ("ErrorAction", "WarningAction", "InformationAction"):
            preference = self.action_preference(param, value)
            if param.name == "ErrorAction":
                bound.error_action = preference
            elif param.name == "WarningAction":
                bound.warning_action = preference
            bound.values[param.name] = preference
            return
        if param.mandatory and value is None and param.kind not in (Kind.SWITCH, Kind.BOOL):
            raise self.fail(
                "ParameterArgumentValidationErrorNullNotAllowed",
                f"Cannot bind argument to parameter '{param.name}' because it is null.",
                ErrorCategory.InvalidData,
                errors.PARAMETER_VALIDATION_EXCEPTION,
            )
        converted = self.convert(param, value)
        if param.not_null_or_empty and _null_or_empty(converted):
            raise self.fail(
                "ParameterArgumentValidationError",
                f"Cannot validate argument on parameter '{param.name}'. The argument is null or empty. Provide an "
                "argument that is not null or empty, and then try the command again.",
                ErrorCategory.InvalidData,
                errors.PARAMETER_VALIDATION_EXCEPTION,
            )
        bound.values[param.name] = converted

    @staticmethod
    def in_set(param: Param, set_name: str) -> bool:
        return not param.sets or set_name in param.sets or set_name == ALL_SETS

    def candidate_sets(self, bound: Bound) -> list[str]:
        candidates = self.info.sets()
        for name in bound.values:
            if name.lower() in _COMMON_NAMES:
                continue
            param = next(p for p in self.info.params if p.name == name)
            if param.sets:
                candidates = [s for s in candidates if s in param.sets]
        if not candidates:
            raise self.ambiguous_set()
        return candidates

    def ambiguous_set(self) -> TerminatingError:
        return self.fail(
            "AmbiguousParameterSet", "Parameter set cannot be resolved using the specified named parameters."
        )

    def next_positional(self, bound: Bound, candidates: list[str]) -> Param | None:
        options = [
            p
            for p in self.info.params
            if p.position is not None
            and p.name not in bound.values
            and (not p.sets or any(s in p.sets for s in candidates))
        ]
        if not options:
            return None
        # When sets disagree on a position, prefer the default set's parameter (Move-VM: -Name over -VM).
        options.sort(key=lambda p: (p.position, 0 if self.info.default_set in p.sets or not p.sets else 1))
        return options[0]

    def bind_pipeline(self, bound: Bound, candidates: list[str], pipeline_input: Sequence[Any]) -> None:
        sample = pipeline_input[0]
        for param in self.info.params:
            if not param.pipeline or param.name in bound.values:
                continue
            if param.sets and not any(s in param.sets for s in candidates):
                continue
            if param.kind in (Kind.OBJECT, Kind.OBJECTS) and not is_type(sample, param.type_name):
                continue
            if param.kind in (Kind.STRING, Kind.STRINGS) and not isinstance(sample, str):
                continue
            self.set_value(bound, param, list(pipeline_input) if param.kind is not Kind.OBJECT else sample)
            bound.pipeline_param = param.name
            return
        raise self.fail(
            "InputObjectNotBound",
            "The input object cannot be bound to any parameters for the command either because the command does not "
            "take pipeline input or the input and its properties do not match any of the parameters that take "
            "pipeline input.",
        )

    def choose_set(self, bound: Bound, candidates: list[str]) -> str:
        if len(candidates) == 1:
            return candidates[0]
        if self.info.default_set in candidates:
            return self.info.default_set
        complete = [
            s
            for s in candidates
            if all(p.name in bound.values for p in self.info.params if p.mandatory and p.sets and s in p.sets)
        ]
        if complete:
            # Several complete sets (Move-VM -VM with only -DestinationHost fits both VM sets): the first
            # declared wins, as the module's own default for that pair.
            return complete[0]
        raise self.ambiguous_set()


def bind(info: CmdletInfo, spec: CommandSpec, pipeline_input: Sequence[Any] = ()) -> Bound:
    """Bind one command's parameters (and pipeline input) or raise the binder's TerminatingError."""
    return _Binder(info).bind(spec, pipeline_input)


def _null_or_empty(value: Any) -> bool:
    if value is None or value == "":
        return True
    if isinstance(value, list | tuple):
        return not value or any(v is None or v == "" for v in value)
    return False


def _to_string(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, PSEnumBase):
        return dotnet_name(value)
    return str(value)


def _display(value: Any) -> str:
    if isinstance(value, list | tuple):
        return " ".join(_to_string(v) for v in value)
    return _to_string(value)


def _dotnet_type(value: Any) -> str:
    if isinstance(value, bool):
        return "System.Boolean"
    if isinstance(value, str):
        return "System.String"
    if isinstance(value, int):
        return "System.Int32"
    if isinstance(value, list | tuple):
        return "System.Object[]"
    if isinstance(value, dict):
        return "System.Collections.Hashtable"
    ps = getattr(value, "PSObject", None)
    if ps is not None and ps.type_names:
        return str(ps.type_names[0])
    return "System.Object"
