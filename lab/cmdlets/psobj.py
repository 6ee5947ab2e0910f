"""PowerShell object plumbing: .NET enums as psrpcore enum types, object construction, property access.

Enums are serialized as `<Obj>` with `<TN>` = `<EnumType>, System.Enum, System.ValueType, System.Object`,
`<ToString>` = the member name and the integer value (fidelity catalogue 1.0). Values are catalogue 4
unless a comment says otherwise.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Iterable
from typing import Any

from psrpcore.types import (
    PSCustomObject,
    PSEnumBase,
    PSList,
    PSNoteProperty,
    PSObject,
    PSType,
    PSUInt,
)

HV = "Microsoft.HyperV.PowerShell"
FC = "Microsoft.FailoverClusters.PowerShell"


# --- Hyper-V enums (catalogue 4, STUB-HV) ---------------------------------------------------------------
@PSType([f"{HV}.VMState"], rehydrate=False)
class VMStateEnum(PSEnumBase):
    Other = 1
    Running = 2
    Off = 3
    Stopping = 4
    Saved = 6
    Paused = 9
    Starting = 10
    Reset = 11
    Saving = 32773
    Pausing = 32776
    Resuming = 32777
    FastSaved = 32779
    FastSaving = 32780
    ForceShutdown = 32781
    ForceReboot = 32782
    Hibernated = 32783
    ComponentServicing = 32784
    RunningCritical = 32785
    OffCritical = 32786
    StoppingCritical = 32787
    SavedCritical = 32788
    PausedCritical = 32789
    StartingCritical = 32790
    ResetCritical = 32791
    SavingCritical = 32792
    PausingCritical = 32793
    ResumingCritical = 32794
    FastSavedCritical = 32795
    FastSavingCritical = 32796


@PSType([f"{HV}.MigrationAuthenticationType"], rehydrate=False)
class MigrationAuthenticationTypeEnum(PSEnumBase):
    CredSSP = 0
    Kerberos = 1


@PSType([f"{HV}.VMMigrationPerformance"], rehydrate=False)
class VMMigrationPerformanceEnum(PSEnumBase):
    TCPIP = 0
    Compression = 1
    SMB = 2


@PSType([f"{HV}.VMOperationalStatus"], rehydrate=False)
class VMOperationalStatusEnum(PSEnumBase):
    Ok = 2
    Degraded = 3
    PredictiveFailure = 5
    InService = 11
    Dormant = 15
    SupportingEntityInError = 16
    ApplyingSnapshot = 23769
    CreatingSnapshot = 32768
    DeletingSnapshot = 32770
    WaitingToStart = 32771
    MergingDisks = 32772
    ExportingVirtualMachine = 32773
    MigratingVirtualMachine = 32774
    BackingUpVirtualMachine = 32776
    ModifyingUpVirtualMachine = 32777
    StorageMigrationPhaseOne = 32778
    StorageMigrationPhaseTwo = 32779
    MigratingPlannedVm = 32780
    CheckingCompatibility = 32781
    ApplicationCriticalState = 32782
    CommunicationTimedOut = 32783
    CommunicationFailed = 32784


@PSType([f"{HV}.VMHeartbeatStatus"], rehydrate=False)
class VMHeartbeatStatusEnum(PSEnumBase):
    Unknown = 0
    Disabled = 1
    NoContact = 2
    Error = 3
    LostCommunication = 4
    OkApplicationsUnknown = 5
    OkApplicationsHealthy = 6
    OkApplicationsCritical = 7
    Paused = 8


@PSType([f"{HV}.StartAction"], rehydrate=False)
class StartActionEnum(PSEnumBase):
    Nothing = 2
    StartIfRunning = 3
    Start = 4


@PSType([f"{HV}.StopAction"], rehydrate=False)
class StopActionEnum(PSEnumBase):
    TurnOff = 2
    Save = 3
    ShutDown = 4


@PSType([f"{HV}.CriticalErrorAction"], rehydrate=False)
class CriticalErrorActionEnum(PSEnumBase):
    # Names and values as reflected in STUB-HV (not in the catalogue's table).
    none = 0
    Pause = 1


@PSType([f"{HV}.CheckpointType"], rehydrate=False)
class CheckpointTypeEnum(PSEnumBase):
    Disabled = 2
    Production = 3
    ProductionOnly = 4
    Standard = 5


@PSType([f"{HV}.ControllerType"], rehydrate=False)
class ControllerTypeEnum(PSEnumBase):
    IDE = 0
    SCSI = 1
    PMEM = 2


@PSType([f"{HV}.DvdMediaType"], rehydrate=False)
class DvdMediaTypeEnum(PSEnumBase):
    none = 0
    ISO = 1
    PassThrough = 2


@PSType([f"{HV}.OnOffState"], rehydrate=False)
class OnOffStateEnum(PSEnumBase):
    On = 0
    Off = 1


@PSType([f"{HV}.VMSwitchType"], rehydrate=False)
class VMSwitchTypeEnum(PSEnumBase):
    Private = 0
    Internal = 1
    External = 2


@PSType([f"{HV}.VMSwitchBandwidthMode"], rehydrate=False)
class VMSwitchBandwidthModeEnum(PSEnumBase):
    Default = 0
    Weight = 1
    Absolute = 2
    none = 3


@PSType(["Microsoft.Vhd.PowerShell.VhdType"], rehydrate=False)
class VhdTypeEnum(PSEnumBase):
    Unknown = 0
    Fixed = 2
    Dynamic = 3
    Differencing = 4


@PSType(["Microsoft.Vhd.PowerShell.VhdFormat"], rehydrate=False)
class VhdFormatEnum(PSEnumBase):
    Unknown = 0
    VHD = 2
    VHDX = 3
    VHDSet = 4


@PSType([f"{HV}.OperationType"], rehydrate=False)
class OperationTypeEnum(PSEnumBase):
    MoveVirtualMachine = 0
    ImportVirtualMachine = 1
    MoveVirtualMachineAndStorage = 2


@PSType([f"{HV}.VirtualMachineType"], rehydrate=False)
class VirtualMachineTypeEnum(PSEnumBase):
    RealizedVirtualMachine = 3
    PlannedVirtualMachine = 4


@PSType([f"{HV}.VirtualMachineSubType"], rehydrate=False)
class VirtualMachineSubTypeEnum(PSEnumBase):
    Unknown = 0
    Generation1 = 1
    Generation2 = 2


@PSType([f"{HV}.VMReplicationState"], rehydrate=False)
class VMReplicationStateEnum(PSEnumBase):
    # Only the value a non-replicated VM shows (catalogue 1.1: "Disabled"); the value 0 is the lab's.
    Disabled = 0


@PSType([f"{HV}.VMReplicationMode"], rehydrate=False)
class VMReplicationModeEnum(PSEnumBase):
    none = 0
    Primary = 1
    Replica = 2
    TestReplica = 3
    ExtendedReplica = 4


@PSType([f"{HV}.VMReplicationHealthState"], rehydrate=False)
class VMReplicationHealthStateEnum(PSEnumBase):
    NotApplicable = 0
    Normal = 1
    Warning = 2
    Critical = 3


@PSType([f"{HV}.EnhancedSessionTransportType"], rehydrate=False)
class EnhancedSessionTransportTypeEnum(PSEnumBase):
    VMBus = 0
    HvSocket = 1


# --- Failover clustering (catalogue 1.12, STUB-FC) ----------------------------------------------------
@PSType([f"{FC}.ClusterGroupState"], rehydrate=False)
class ClusterGroupStateEnum(PSEnumBase):
    Unknown = -1
    Online = 0
    Offline = 1
    Failed = 2
    PartialOnline = 3
    Pending = 4


@PSType([f"{FC}.ClusterNodeState"], rehydrate=False)
class ClusterNodeStateEnum(PSEnumBase):
    Unknown = -1
    Up = 0
    Down = 1
    Paused = 2
    Joining = 3


@PSType([f"{FC}.GroupType"], rehydrate=False)
class GroupTypeEnum(PSEnumBase, base_type=PSUInt):
    Cluster = 1
    AvailableStorage = 2
    VirtualMachine = 111


@PSType([f"{FC}.ClusterNodeDrainStatus"], rehydrate=False)
class ClusterNodeDrainStatusEnum(PSEnumBase):
    NotInitiated = 0
    InProgress = 1
    Completed = 2
    Failed = 3


# --- PowerShell ---------------------------------------------------------------------------------------
@PSType(["System.Management.Automation.JobState"], rehydrate=False)
class PSJobStateEnum(PSEnumBase):
    NotStarted = 0
    Running = 1
    Completed = 2
    Failed = 3
    Stopped = 4
    Blocked = 5
    Suspended = 6
    Disconnected = 7
    Suspending = 8
    Stopping = 9
    AtBreakpoint = 10


def enum_names(enum_type: type[PSEnumBase]) -> list[str]:
    """The .NET enumerator names, in value order as [Enum]::GetNames gives them."""
    members = sorted(enum_type, key=lambda m: int(m))
    return [dotnet_name(m) for m in members]


def dotnet_name(member: PSEnumBase) -> str:
    # `None` is a Python keyword, so members named None are spelled `none` here (psrpcore prints them as None).
    return "None" if member.name == "none" else str(member.name)


def enum_from_name(enum_type: type[PSEnumBase], name: str) -> PSEnumBase | None:
    for member in enum_type:
        if dotnet_name(member).lower() == name.strip().lower():
            return member
    return None


# --- objects --------------------------------------------------------------------------------------------
Props = list[tuple[str, Any]]


def _note(owner: PSObject, name: str, value: Any) -> PSNoteProperty:
    """`PSNoteProperty(name, value)`, set on `owner`: given its value, psrpcore's constructor builds a throwaway
    PSObject to set it on, which was a seventh of the lab's CPU for a `Get-VM` (about 70 properties)."""
    prop = PSNoteProperty(name)
    prop.set_value(value, owner)
    return prop


def make_object(
    type_names: list[str], adapted: Props, extended: Props | None = None, to_string: str | None = None
) -> PSObject:
    """A .NET object as a real host serializes it: its properties in `<Props>`, type data members in `<MS>`."""
    obj = PSObject()
    obj.PSObject.type_names = list(type_names)
    for name, value in adapted:
        obj.PSObject.adapted_properties.append(_note(obj, name, value))
    for name, value in extended or []:
        obj.PSObject.extended_properties.append(_note(obj, name, value))
    if to_string is not None:
        obj.PSObject.to_string = to_string
    return obj


def custom_object(props: Props, type_names: list[str] | None = None) -> PSCustomObject:
    """A PSCustomObject (Select-Object output) with note properties in `<MS>`."""
    obj = PSCustomObject()
    if type_names is not None:
        obj.PSObject.type_names = list(type_names)
    for name, value in props:
        obj.PSObject.extended_properties.append(_note(obj, name, value))
    return obj


def ps_array(items: Iterable[Any], element_type: str = "System.Object") -> PSList:
    """A .NET array (`System.String[]`, ...) as the serializer writes it: `<LST>` with the array's type names."""
    lst = PSList(list(items))
    lst.PSObject.type_names = [f"{element_type}[]", "System.Array", "System.Object"]
    return lst


def type_names_of(value: Any) -> list[str]:
    """Type names without the `Deserialized.` prefix a PowerShell deserializer adds."""
    ps = getattr(value, "PSObject", None)
    if ps is None:
        return []
    return [t[len("Deserialized.") :] if t.startswith("Deserialized.") else t for t in ps.type_names]


def is_type(value: Any, type_name: str) -> bool:
    return any(t.lower() == type_name.lower() for t in type_names_of(value))


_MISSING = object()


def get_prop(value: Any, name: str, default: Any = None) -> Any:
    """Read a property the way PowerShell does: extended members win over adapted ones; names ignore case."""
    if isinstance(value, dict):
        for key, item in value.items():
            if str(key).lower() == name.lower():
                return item
    ps = getattr(value, "PSObject", None)
    if ps is not None:
        for group in (ps.extended_properties, ps.adapted_properties):
            for prop in group:
                if prop.name.lower() == name.lower():
                    return prop.get_value(value)
    return default


def prop_names(value: Any) -> list[str]:
    ps = getattr(value, "PSObject", None)
    if ps is None:
        return list(value.keys()) if isinstance(value, dict) else []
    names: list[str] = []
    for group in (ps.adapted_properties, ps.extended_properties):
        for prop in group:
            if prop.name.lower() not in (n.lower() for n in names):
                names.append(prop.name)
    return names


def has_wildcard(pattern: str) -> bool:
    """WildcardPattern.ContainsWildcardCharacters: an unescaped `*`, `?` or `[` (a backtick escapes the next
    character, so `` web`[1`] `` holds none)."""
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "`":
            index += 2
            continue
        if char in "*?[":
            return True
        index += 1
    return False


class WildcardPatternError(ValueError):
    """A pattern PowerShell's WildcardPattern refuses (an unclosed `[`)."""


@functools.lru_cache(maxsize=512)
def _wildcard_regex(pattern: str) -> re.Pattern[str]:
    """PowerShell's WildcardPattern as a regex: `*`, `?`, `[abc]`, `[a-c]`; a backtick makes the next character
    literal (also inside brackets); `!` and `^` have no special meaning in brackets."""
    out: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "`" and index + 1 < len(pattern):
            out.append(re.escape(pattern[index + 1]))
            index += 2
        elif char == "*":
            out.append(".*")
            index += 1
        elif char == "?":
            out.append(".")
            index += 1
        elif char == "[":
            index += 1
            members: list[str] = []
            while index < len(pattern) and pattern[index] != "]":
                if pattern[index] == "`" and index + 1 < len(pattern):
                    members.append(re.escape(pattern[index + 1]))
                    index += 2
                elif pattern[index] == "-" and members and index + 1 < len(pattern) and pattern[index + 1] != "]":
                    low = members.pop()
                    high = pattern[index + 1]
                    members.append(f"{low}-{re.escape(high)}")
                    index += 2
                else:
                    members.append(re.escape(pattern[index]))
                    index += 1
            if index >= len(pattern):
                raise WildcardPatternError(f"The specified wildcard character pattern is not valid: {pattern}")
            index += 1  # the closing bracket
            if not members:
                raise WildcardPatternError(f"The specified wildcard character pattern is not valid: {pattern}")
            out.append(f"[{''.join(members)}]")
        else:
            out.append(re.escape(char))
            index += 1
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


def check_pattern(pattern: str) -> None:
    """Raise WildcardPatternError for a pattern WildcardPattern refuses."""
    _wildcard_regex(pattern)


def wildcard_match(pattern: str, value: str) -> bool:
    """PowerShell wildcard matching (case-insensitive; `*`, `?`, `[abc]`, backtick escapes). A pattern that
    WildcardPattern refuses matches nothing."""
    try:
        return _wildcard_regex(pattern).fullmatch(value) is not None
    except WildcardPatternError:
        return False


def _upper(text: str) -> str:
    # .NET's ordinal case-insensitive comparison maps one character to one (no "ß" -> "SS").
    return "".join(u if len(u := c.upper()) == 1 else c for c in text)


def same_name(a: str, b: str) -> bool:
    """Hyper-V's literal name match: exact but for case."""
    return len(a) == len(b) and _upper(a) == _upper(b)


def resolve_names(patterns: Iterable[str], names: Iterable[str]) -> tuple[list[int], list[str], list[str]]:
    """How the Hyper-V module's object locator resolves `-Name` (catalogue 6.1): a name with an unescaped `*`,
    `?` or `[` is a case-insensitive pattern, anything else an exact case-insensitive match (backticks
    included, so escaping finds nothing). Returns the indexes into `names` that matched (in `names` order, each
    once), the literal names that matched nothing (the not-found error), and the patterns WildcardPattern
    refuses. A pattern that matches nothing is neither: it gives nothing, without an error."""
    candidates = list(names)
    matched: list[int] = []
    missing: list[str] = []
    invalid: list[str] = []
    for pattern in patterns:
        if has_wildcard(pattern):
            try:
                check_pattern(pattern)
            except WildcardPatternError:
                invalid.append(pattern)
                continue
            hits = [i for i, name in enumerate(candidates) if wildcard_match(pattern, name)]
        else:
            hits = [i for i, name in enumerate(candidates) if same_name(pattern, name)]
            if not hits:
                missing.append(pattern)
        matched.extend(i for i in hits if i not in matched)
    return sorted(matched), missing, invalid


def as_guid(value: Any) -> uuid.UUID | None:
    if isinstance(value, uuid.UUID):
        return uuid.UUID(str(value))
    try:
        return uuid.UUID(str(value).strip("{}"))
    except (ValueError, TypeError):
        return None


_WQL_TERM = re.compile(r"""^\s*(\w+)\s*=\s*(?:'([^']*)'|"([^"]*)"|(\S+))\s*$""")


def parse_wql_filter(text: str) -> list[tuple[str, str]] | None:
    """`Name='x' AND VirtualSystemName="guid"`: the simple equality filters the lab understands, or None."""
    terms: list[tuple[str, str]] = []
    for part in re.split(r"\s+AND\s+", text.strip(), flags=re.IGNORECASE):
        match = _WQL_TERM.match(part)
        if match is None:
            return None
        value = next(g for g in match.groups()[1:] if g is not None)
        terms.append((match.group(1), value))
    return terms
