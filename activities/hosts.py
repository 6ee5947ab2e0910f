"""The host client: structured PowerShell commands on a Hyper-V host over WinRM/PSRP.

`HostClient(entry)` is a context manager that opens ONE runspace pool for its life (one activity attempt:
a short-lived pool, because a WinRM session that broke cannot be trusted again, reference/psrp-wire-notes.md)
and runs structured commands on it: cmdlet + named parameters + switches + positional arguments, never
PowerShell text (DESIGN.md invariant 2; there is no `add_script` in this module). Every result is checked
for `had_errors` AND the error stream: pypsrp 0.9.1 reports a non-terminating error (Hyper-V's usual way:
`Get-VM -Name ghost`, a failed `Move-VM`) with state Completed and `had_errors` False.

Whatever goes wrong, the caller gets one of the engine's errors (activities/errors.py): every error record
and every exception raised while talking to the host goes through the one table of what hosts say,
activities/host_errors.py (`RULES`, `classify`, `classify_exception`), with the host, the command, the
account's name and where its password comes from (never the password) for the message and remedy, and the
client's own password handed over to be scrubbed out of anything raised. `props()` flattens a deserialized
.NET object into a dict.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final

from pydantic import SecretStr
from pypsrp.complex_objects import GenericComplexObject, PSInvocationState
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from activities.errors import SnlmError, TransientError
from activities.host_errors import ErrorInfo, classify, classify_exception
from activities.inventory import HostEntry
from workflows import contracts as c

__all__ = [
    "NULL",
    "Command",
    "CommandResult",
    "HostClient",
    "ProgressInfo",
    "props",
]

log = logging.getLogger(__name__)

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
        state: "Completed", "Failed" or "Stopped".
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
    """What one closed session did: its host, round trips and commands (no arguments, so no data leaks)."""

    host: str
    round_trips: int
    calls: dict[str, int]


_observers: list[Callable[[SessionReport], None]] = []


def add_session_observer(observer: Callable[[SessionReport], None]) -> Callable[[], None]:
    """Call `observer` as each HostClient closes (on the activity's thread, so `activity.info()` says which
    step it served); returns the function that removes it. Used for round-trip accounting per step."""
    _observers.append(observer)
    return lambda: _observers.remove(observer)


# -- the client -----------------------------------------------------------------------------------------
class HostClient:
    """One host, one runspace pool, for the life of a `with` block (an activity attempt).

    Args:
        entry: the host's inventory entry (address, auth, password reference, TLS).
        connect_timeout: seconds to establish a TCP/TLS connection.
        read_timeout: seconds to wait for any HTTP answer; must exceed `operation_timeout`.
        operation_timeout: the WSMan OperationTimeout (seconds a Receive may long-poll on the host).
        command_timeout: the default bound on one command, start to end; a command still running then is
            stopped and TransientError(HostTimeout) raised. Per call: `run(..., timeout=)`.

    `round_trips` counts the pool's open and close and every command invoked (for the benchmark "PSRP round
    trips per migration, by step"); `calls` counts commands by cmdlet.
    """

    def __init__(
        self,
        entry: HostEntry,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        operation_timeout: int = 20,
        command_timeout: float = 600.0,
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
        self._pool: RunspacePool | None = None
        self._password: SecretStr | None = None

    def __repr__(self) -> str:
        return f"HostClient({self.host!r}, {self.entry.scheme}://{self.entry.address}:{self.entry.effective_port})"

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
            pool = RunspacePool(connection)
            self.round_trips += 1
            pool.open()
        except Exception as exc:
            raise self._fail(exc, "opening a PowerShell session") from exc
        self._pool = pool
        log.debug("opened a runspace pool on %s", self.host)
        return self

    def close(self) -> None:
        """Close the pool (one round trip). A failure to close is logged, never raised: the work is done, and
        the host drops an idle shell by itself."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        self.round_trips += 1
        try:
            pool.close()
        except Exception as exc:
            log.warning("closing the PowerShell session on %s failed: %s", self.host, self._fail(exc, "close"))
        report = SessionReport(self.host, self.round_trips, dict(self.calls))
        for observer in list(_observers):
            try:
                observer(report)
            except Exception:  # accounting must never break a host session
                log.warning("a session observer failed", exc_info=True)

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
        pool = self._pool
        if pool is None:
            raise RuntimeError(f"{self!r} is not open: use it as a context manager")
        name = " | ".join(command.cmdlet for command in commands)
        ps = PowerShell(pool)
        for command in commands:
            ps.add_cmdlet(command.cmdlet)
            for parameter, value in command.parameters.items():
                if value is NULL:
                    ps.add_parameter(parameter, None)
                elif value is not None:
                    ps.add_parameter(parameter, value)
            for switch in command.switches:
                ps.add_parameter(switch)
            for argument in command.arguments:
                ps.add_argument(argument)
            if error_action_stop:
                ps.add_parameter("ErrorAction", "Stop")
            self.calls[command.cmdlet] += 1
        self.round_trips += 1
        limit = self.command_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        try:
            pipeline_input: Any = list(input) if input is not None else None
            ps.begin_invoke(input=pipeline_input)
            while ps.state == PSInvocationState.RUNNING:
                if time.monotonic() > deadline:
                    self._stop(ps)
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
            raise self._fail(exc, name) from exc
        return self._result(ps, name, check)

    @staticmethod
    def _stop(ps: PowerShell) -> None:
        try:
            ps.stop()
        except Exception as exc:
            log.debug("stopping a pipeline failed: %s", type(exc).__name__)

    def _result(self, ps: PowerShell, name: str, check: bool) -> CommandResult:
        records = tuple(ErrorInfo.from_record(record) for record in ps.streams.error)
        if ps.had_errors and not records:
            # Failed without a record: still a failure (pypsrp sets had_errors only for state Failed).
            records = (ErrorInfo(message=f"the pipeline ended {_state_name(ps.state)} without an error record"),)
        errors = tuple(
            classify(info, self.host, info.activity or name, context=self._context(), secrets=self._secrets())
            for info in records
        )
        if errors and check:
            first = errors[0]
            if len(errors) > 1:
                first.details["other_errors"] = [str(error) for error in errors[1:5]]
            raise first
        return CommandResult(
            host=self.host,
            command=name,
            output=tuple(_output_value(item) for item in ps.output),
            raw_output=tuple(ps.output),
            warnings=tuple(str(getattr(record, "message", record)) for record in ps.streams.warning),
            verbose=tuple(str(getattr(record, "message", record)) for record in ps.streams.verbose),
            progress=tuple(_progress(record) for record in ps.streams.progress),
            records=records,
            errors=errors,
            state=_state_name(ps.state),
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
