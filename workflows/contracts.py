"""The typed contract between workflows, activities and starters: every input and output, and the error type names.

Imports nothing of the project: workflows, activities and starters all import this module, never each other.
Every type here is a frozen dataclass of plain values so that Temporal's default data converter carries it
unchanged, and none of them ever holds a secret (DESIGN.md invariant 1): hosts are named, never addressed
with credentials.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import timedelta

# -- Directory: Kerberos constrained delegation -------------------------------------------------------------

# userAccountControl bits (MS-ADTS 2.2.16) that matter for delegation.
TRUSTED_FOR_DELEGATION = 0x80000  # unconstrained delegation: never set, refused when found
NOT_DELEGATED = 0x100000  # "Account is sensitive and cannot be delegated"
TRUSTED_TO_AUTH_FOR_DELEGATION = 0x1000000  # protocol transition: "Use any authentication protocol"

CIFS_SERVICE = "cifs"
MIGRATION_SERVICE = "Microsoft Virtual System Migration Service"
DELEGATED_SERVICES = (CIFS_SERVICE, MIGRATION_SERVICE)


class DelegationMode(enum.StrEnum):
    """How a host's computer account may delegate to its peers' services.

    `kerberos-only` is what the Server 2012 seed article configures; `any-protocol` (protocol transition,
    TRUSTED_TO_AUTH_FOR_DELEGATION) is what Windows Server 2016 and later need, or the move fails with
    0x8009030E; `auto` picks per host from its OS version.
    """

    KERBEROS_ONLY = "kerberos-only"
    ANY_PROTOCOL = "any-protocol"
    AUTO = "auto"


@dataclass(frozen=True)
class DelegationHost:
    """One host of a pair, as the directory knows it.

    Attributes:
        name: the computer's short (NetBIOS) name, e.g. `HV01`; its account is `HV01$`.
        fqdn: its DNS name; when empty, the account's `dNSHostName` is used.
        os_version: the host's Windows Server release ("2012", "2012R2", "2016", ..., or a build such as
            "10.0.17763"); needed only in `auto` mode.
    """

    name: str
    fqdn: str = ""
    os_version: str = ""


@dataclass(frozen=True)
class EnsureDelegationInput:
    """Ensure that `source` and `destination` may each delegate to the other's cifs and migration services.

    `mode` None means the worker's configured mode.
    """

    source: DelegationHost
    destination: DelegationHost
    mode: DelegationMode | None = None


@dataclass(frozen=True)
class DelegationChange:
    """What one ensure wrote to one computer account: exactly what a revert removes.

    Attributes:
        account: the account's sAMAccountName (e.g. `HV01$`).
        account_dn: its distinguished name as the directory returned it.
        added_values: the `msDS-AllowedToDelegateTo` values this change added (none that were there before).
        uac_bits_set: the userAccountControl bits this change turned on (0 or TRUSTED_TO_AUTH_FOR_DELEGATION).
    """

    account: str
    account_dn: str
    added_values: tuple[str, ...] = ()
    uac_bits_set: int = 0

    @property
    def is_empty(self) -> bool:
        return not self.added_values and not self.uac_bits_set


@dataclass(frozen=True)
class EnsureDelegationResult:
    """The changes an ensure made, one per account that changed (none when everything was already there)."""

    changes: tuple[DelegationChange, ...] = ()

    @property
    def changed(self) -> bool:
        return any(not change.is_empty for change in self.changes)


@dataclass(frozen=True)
class RevertDelegationResult:
    """What a revert actually removed: the values and bits of the change that were still there."""

    removed: tuple[DelegationChange, ...] = ()


@dataclass(frozen=True)
class ComputerDelegation:
    """The delegation settings of one computer account, as read from the directory.

    Attributes:
        name: the short name (sAMAccountName without the trailing `$`).
        account_dn: the account's distinguished name.
        dns_host_name: its `dNSHostName` ("" when unset).
        allowed_to_delegate_to: `msDS-AllowedToDelegateTo`, as stored.
        service_principal_names: `servicePrincipalName`, as stored.
        user_account_control: the whole userAccountControl value.
    """

    name: str
    account_dn: str
    dns_host_name: str
    allowed_to_delegate_to: tuple[str, ...]
    service_principal_names: tuple[str, ...]
    user_account_control: int

    @property
    def constrained(self) -> bool:
        """Constrained delegation is configured (some service is listed)."""
        return bool(self.allowed_to_delegate_to)

    @property
    def protocol_transition(self) -> bool:
        """Protocol transition, "use any authentication protocol" (TRUSTED_TO_AUTH_FOR_DELEGATION)."""
        return bool(self.user_account_control & TRUSTED_TO_AUTH_FOR_DELEGATION)

    @property
    def unconstrained(self) -> bool:
        return bool(self.user_account_control & TRUSTED_FOR_DELEGATION)

    @property
    def not_delegated(self) -> bool:
        """The account is marked "sensitive and cannot be delegated" (NOT_DELEGATED)."""
        return bool(self.user_account_control & NOT_DELEGATED)

    def may_delegate_to(self, service: str, host: str) -> bool:
        """Whether `service/host` is listed (values compare case-insensitively, as in AD)."""
        wanted = f"{service}/{host}".casefold()
        return any(value.casefold() == wanted for value in self.allowed_to_delegate_to)


# Error type names (ApplicationError.type) the directory activities raise. Non-retryable unless noted.
DIRECTORY_INVALID_CREDENTIALS = "DirectoryInvalidCredentials"
DIRECTORY_INSUFFICIENT_RIGHTS = "DirectoryInsufficientRights"
DIRECTORY_NO_SUCH_COMPUTER = "DirectoryNoSuchComputer"
DIRECTORY_DELEGATION_REFUSED = "DirectoryDelegationRefused"  # unconstrained or "cannot be delegated"
DIRECTORY_TLS_FAILURE = "DirectoryTlsFailure"
DIRECTORY_CONFIGURATION = "DirectoryConfiguration"
DIRECTORY_UNREACHABLE = "DirectoryUnreachable"  # retryable
DIRECTORY_REPLICATION_PENDING = "DirectoryReplicationPending"  # retryable
DIRECTORY_NOT_CONFIGURED = "DirectoryNotConfigured"  # configuration: the worker has no directory to write to
SECRETS_UNREADABLE = "SecretsUnreadable"  # configuration: a password reference the worker cannot read
DIRECTORY_CONFLICT = "DirectoryConflict"  # retryable: someone changed the account while we wrote it
DIRECTORY_BIND_FAILED = "DirectoryBindFailed"  # retryable (bounded): a bind refused for a reason not in the table
DIRECTORY_OPERATION_FAILED = "DirectoryOperationFailed"  # retryable (bounded): an LDAP result not in the table

# Error type names the host client (activities/hosts.py, activities/inventory.py) raises. The kind, and so the
# retry behaviour, is noted per name: configuration (non-retryable), transient (retried), admission (requeue),
# unknown (bounded retries).
INVENTORY_INVALID = "InventoryInvalid"  # configuration: the inventory file, a host entry or a password reference
UNKNOWN_HOST = "UnknownHost"  # configuration: the host is not in the inventory
HOST_UNREACHABLE = "HostUnreachable"  # transient: connection refused or reset, name not resolved
HOST_TIMEOUT = "HostTimeout"  # transient: the host did not answer within the read or command timeout
HOST_SESSION_LOST = "HostSessionLost"  # transient: the shell is gone (WinRM restarted) or the pool broke
HOST_OPERATION_TIMEOUT = "HostOperationTimeout"  # transient: WSMan fault 2150858793
HOST_BUSY = "HostBusy"  # transient: the host reports a resource busy or an operation timeout
HOST_AUTHENTICATION_FAILED = "HostAuthenticationFailed"  # configuration: wrong credentials
HOST_TLS_FAILURE = "HostTlsFailure"  # configuration: the host's certificate does not validate
HOST_ACCESS_DENIED = "HostAccessDenied"  # configuration: the account lacks rights (0x80070005, WSMan 5)
HOST_COMMAND_FAILED = "HostCommandFailed"  # unknown: an error record nobody recognised
HOST_TRANSPORT_ERROR = "HostTransportError"  # unknown: a transport failure nobody recognised
COMMAND_NOT_FOUND = "CommandNotFound"  # configuration: the cmdlet's module is missing on the host
PARAMETER_BINDING_FAILED = "ParameterBindingFailed"  # configuration: snlm sent a command the host rejects (a bug)
VM_NOT_FOUND = "VmNotFound"  # configuration
VM_NAME_AMBIGUOUS = "VmNameAmbiguous"  # configuration: several VMs on one host have the name
SWITCH_NOT_FOUND = "SwitchNotFound"  # configuration
VM_IS_CLUSTERED = "VmIsClustered"  # configuration: remove the cluster role first
DELEGATION_MISSING = "DelegationMissing"  # configuration: 0x8009030E
MIGRATION_CREDENTIALS_REJECTED = "MigrationCredentialsRejected"  # configuration: 0x8009030D
MIGRATION_TARGET_PRINCIPAL_INCORRECT = "MigrationTargetPrincipalIncorrect"  # configuration: 0x80090322
MIGRATION_LOGON_FAILURE = "MigrationLogonFailure"  # configuration: 0x80070569
MIGRATION_NETWORK_ERROR = "MigrationNetworkError"  # transient: 0x8007274D / 0x8007274C / 0x80072746
MIGRATION_PORT_BLOCKED = "MigrationPortBlocked"  # configuration: 0x8007271D
MIGRATION_LIMIT_REACHED = "MigrationLimitReached"  # admission: event 21501
MIGRATION_DISABLED = "MigrationDisabled"  # configuration, auto-remediable: Enable-VMMigration
MIGRATION_NETWORKS_MISSING = "MigrationNetworksMissing"  # configuration, auto-remediable: Add-VMMigrationNetwork
DESTINATION_OUT_OF_MEMORY = "DestinationOutOfMemory"  # configuration: 0x800705AA / 0x8007000E
DESTINATION_DISK_FULL = "DestinationDiskFull"  # configuration: 0x80070070
DESTINATION_LEFTOVERS = "DestinationLeftovers"  # configuration, auto-remediable: 0x800700B7 / 0x80070050
ISO_MISSING_ON_DESTINATION = "IsoMissingOnDestination"  # configuration, auto-remediable: 0xC03A0014
SWITCH_MISSING_ON_DESTINATION = "SwitchMissingOnDestination"  # configuration: Compare-VM 33012
PROCESSOR_INCOMPATIBLE = "ProcessorIncompatible"  # configuration: event 21502
CLUSTER_SERVICE_UNAVAILABLE = "ClusterServiceUnavailable"  # transient

# -- Host migration slots: the HostSlots entity workflow (workflows/host_slots.py) ------------------------

HOST_SLOTS_WORKFLOW_PREFIX = "snlm-host-"
# Hyper-V's own default for MaximumVirtualMachineMigrations (Set-VMHost); used when nobody read the host's value.
HYPERV_DEFAULT_MAX_MIGRATIONS = 2

# Error type names (ApplicationError.type) HostSlots and its helpers raise.
SLOT_WAIT_TIMEOUT = "SlotWaitTimeout"  # admission: no slot within the caller's bound; try again later
SLOT_NOT_HELD = "SlotNotHeld"  # a renew for a lease that expired or was released
SLOT_CAPACITY_INVALID = "SlotCapacityInvalid"  # a capacity below 1 or above the host's own limit
SLOT_REQUEST_INVALID = "SlotRequestInvalid"  # empty holder id, lease or wait not positive
SLOT_LEASE_INVALID = "SlotLeaseInvalid"  # a MigrationPolicy.slot_lease_seconds a move cannot keep renewed

# A move's slot lease (MigrationPolicy.slot_lease_seconds) is renewed SLOT_RENEWALS_PER_LEASE times per lease while
# the move runs, so one renewal may be late or lost without losing the slot, and a holder that is gone (terminated,
# or its workers down) frees both hosts within one lease.
SLOT_RENEWALS_PER_LEASE = 3
# Shorter, and a worker or server pause of a few seconds loses a running move's slot.
SLOT_LEASE_MIN_SECONDS = 10.0
# Longer, and a terminated move keeps its hosts from other moves for more than an hour.
SLOT_LEASE_MAX_SECONDS = 3600.0
# Each renewal adds 15 events to the move's history (a timer, two signals, their workflow tasks): a move that runs
# for its whole move_timeout_seconds stays below the 10,240 events at which Temporal starts warning (it terminates
# a run at 51,200).
SLOT_MAX_RENEWALS_PER_MOVE = 500


def slot_lease_problem(lease_seconds: float, move_timeout_seconds: float) -> str:
    """Why a move cannot hold its slots with this lease ("" when it can), with the remedy."""
    if not SLOT_LEASE_MIN_SECONDS <= lease_seconds <= SLOT_LEASE_MAX_SECONDS:  # also refuses NaN
        return (
            f"slot_lease_seconds {lease_seconds:g} is outside {SLOT_LEASE_MIN_SECONDS:g}-{SLOT_LEASE_MAX_SECONDS:g} s. "
            "Remedy: a lease of a few minutes (the default is 300 s)"
        )
    renewals = move_timeout_seconds * SLOT_RENEWALS_PER_LEASE / lease_seconds
    if renewals > SLOT_MAX_RENEWALS_PER_MOVE:
        shortest = move_timeout_seconds * SLOT_RENEWALS_PER_LEASE / SLOT_MAX_RENEWALS_PER_MOVE
        return (
            f"a move of up to {move_timeout_seconds:g} s would renew a {lease_seconds:g} s slot lease {renewals:.0f} "
            f"times, more than the {SLOT_MAX_RENEWALS_PER_MOVE} its history allows for. Remedy: slot_lease_seconds "
            f"of at least {shortest:g} s, or a shorter move_timeout_seconds"
        )
    return ""


def host_slots_workflow_id(host: str) -> str:
    """The HostSlots workflow id of a host: `snlm-host-<host>`, lower-cased (Windows names ignore case)."""
    return HOST_SLOTS_WORKFLOW_PREFIX + host.casefold()


@dataclass(frozen=True)
class SlotHolder:
    """A granted slot.

    Attributes:
        holder_id: who holds it (a MigrateVm workflow id, a ticket, an operator); one slot per holder per host.
        lease_seconds: how long a grant or renew lasts.
        expires_at: when the slot is reclaimed unless renewed, in workflow time (seconds since the epoch).
        reply_to: the workflow id to signal grants to ("" for callers that use the updates).
    """

    holder_id: str
    lease_seconds: float
    expires_at: float
    reply_to: str = ""


@dataclass(frozen=True)
class SlotWaiter:
    """A queued request, in arrival order (FIFO)."""

    holder_id: str
    lease_seconds: float
    reply_to: str = ""


@dataclass(frozen=True)
class HostSlotsInput:
    """Start (or continue as new) one host's slots.

    Attributes:
        host: the Hyper-V host's name.
        capacity: how many slots to grant at once (policy may set it below the host's limit).
        host_limit: the host's own MaximumVirtualMachineMigrations; 0 means equal to `capacity`. Capacity never
            exceeds it (DESIGN.md invariant 5).
        holders: carried across continue-as-new, with their lease expiry.
        waiters: carried across continue-as-new, in queue order.
        continue_as_new_after_events: also continue as new past this history length (0: only when the SDK
            suggests it); a knob for tests.
    """

    host: str
    capacity: int
    host_limit: int = 0
    holders: tuple[SlotHolder, ...] = ()
    waiters: tuple[SlotWaiter, ...] = ()
    continue_as_new_after_events: int = 0


@dataclass(frozen=True)
class AcquireSlotRequest:
    """Ask for a slot; idempotent by `holder_id` (a retry returns the same grant or keeps its queue place).

    Attributes:
        holder_id: who asks.
        lease_seconds: the grant lasts this long unless renewed; a crashed holder loses its slot after it.
        wait_seconds: the `acquire` update waits at most this long, then answers "not yet" with the queue
            position (the request stays queued; ask again to keep waiting).
        reply_to: for workflow callers (signal `request_slot`): the workflow id the grant is signalled to.
    """

    holder_id: str
    lease_seconds: float = 900.0
    wait_seconds: float = 60.0
    reply_to: str = ""


@dataclass(frozen=True)
class SlotGrant:
    """The answer to an acquire: granted with its lease expiry, or still queued at `position` (1 = next)."""

    host: str
    holder_id: str
    granted: bool
    expires_at: float = 0.0
    position: int = 0


@dataclass(frozen=True)
class ReleaseSlotRequest:
    """Give a slot back or leave the queue; idempotent."""

    holder_id: str


@dataclass(frozen=True)
class ReleaseSlotResult:
    """What a release did: freed a held slot, left the queue, or nothing (already released or expired)."""

    released: bool = False
    dequeued: bool = False


@dataclass(frozen=True)
class RenewSlotRequest:
    """Extend a held slot's lease from now; `lease_seconds` 0 keeps the holder's lease length."""

    holder_id: str
    lease_seconds: float = 0.0


@dataclass(frozen=True)
class SetCapacityRequest:
    """Change the capacity (policy, or a new reading of the host); `host_limit` 0 keeps the known limit.

    Lowering never revokes a held slot: new grants wait until the holders fall below the new capacity.
    """

    capacity: int
    host_limit: int = 0


@dataclass(frozen=True)
class HostSlotsStatus:
    """The `status` query's answer; `peak_in_use` is the most slots held at once during this run."""

    host: str
    capacity: int
    host_limit: int
    holders: tuple[SlotHolder, ...]
    waiters: tuple[SlotWaiter, ...]
    peak_in_use: int


# -- Pair slots: one entity grants both hosts of a move together (workflows/migration_slots.py) ------------
#
# A move needs a slot on its source AND its destination. Granted host by host, a move holds one host's slot idle
# while it queues for the other's (on a ring of moves, most slot time was spent so). MigrationSlots keeps every
# host's slots in one place and grants a move both of its slots in one step, or nothing.

MIGRATION_SLOTS_WORKFLOW_ID = "snlm-slots"


def migration_slots_workflow_id(book: str = "") -> str:
    """`snlm-slots` (the namespace's one book of host slots), or `snlm-slots@<book>` for a book of its own.

    A deployment whose sites have disjoint hosts and workers of their own may give each site its book
    (MigrationPolicy.slot_book), so that no site's moves wait for another site's workers; the book runs on the task
    queue of the move that started it.
    """
    return f"{MIGRATION_SLOTS_WORKFLOW_ID}@{book}" if book else MIGRATION_SLOTS_WORKFLOW_ID


# How many later requests may take a slot on a host that an earlier waiting request needs before that host is
# reserved for the earlier one: a pair never starves, and a free slot is not left unused for a long queue head.
SLOT_BYPASS_LIMIT = 4


@dataclass(frozen=True)
class HostLimit:
    """A host's own MaximumVirtualMachineMigrations, as the move read it."""

    host: str
    limit: int


@dataclass(frozen=True)
class HostCapacity:
    """One host's slots: its own limit, and the capacity granted (policy may set it below the limit; 0 = the limit)."""

    host: str
    host_limit: int
    capacity: int = 0

    @property
    def effective(self) -> int:
        return min(self.capacity or self.host_limit, self.host_limit)


@dataclass(frozen=True)
class PairRequest:
    """Ask for a slot on each of `hosts` (one or two), granted together; idempotent by `holder_id`.

    Attributes:
        holder_id: who asks (a MigrateVm workflow id, a ticket, an operator).
        hosts: the hosts of the move (a host named twice counts once).
        lease_seconds: the grant's lease. A workflow holder (`reply_to` set) need not renew it: when the lease
            runs out the entity asks the holder's workflow (a signal) and keeps the grant while it still runs.
            A client holder renews with the `renew` update, or loses the slots when the lease runs out.
        wait_seconds: the `acquire` update waits at most this long, then answers "not yet" with the queue place.
        reply_to: for workflow callers (signal `request_pair`): the workflow id the grant is signalled to.
        host_limits: the hosts' own limits as the caller read them (a host seen for the first time starts with
            this, HYPERV_DEFAULT_MAX_MIGRATIONS when none is given; a known host's limit follows the newest reading).
    """

    holder_id: str
    hosts: tuple[str, ...]
    lease_seconds: float = 300.0
    wait_seconds: float = 60.0
    reply_to: str = ""
    host_limits: tuple[HostLimit, ...] = ()


@dataclass(frozen=True)
class PairHolder:
    """A granted pair: both hosts' slots, one lease."""

    holder_id: str
    hosts: tuple[str, ...]
    lease_seconds: float
    expires_at: float
    reply_to: str = ""
    granted_at: float = 0.0


@dataclass(frozen=True)
class PairWaiter:
    """A queued request, in arrival order; `bypassed` counts later requests granted a slot on one of its hosts."""

    holder_id: str
    hosts: tuple[str, ...]
    lease_seconds: float
    reply_to: str = ""
    since: float = 0.0
    bypassed: int = 0


@dataclass(frozen=True)
class PairGrant:
    """The answer to a pair request: granted with its lease expiry, or still queued at `position` (1 = first)."""

    holder_id: str
    hosts: tuple[str, ...]
    granted: bool
    expires_at: float = 0.0
    position: int = 0


@dataclass(frozen=True)
class SetHostCapacityRequest:
    """Set one host's capacity (0: its own limit); `host_limit` 0 keeps the known limit. Never revokes a slot."""

    host: str
    capacity: int
    host_limit: int = 0


@dataclass(frozen=True)
class HostUse:
    """One host in the `status` answer: slots granted now and at most during this run, and requests waiting."""

    host: str
    host_limit: int
    capacity: int
    in_use: int
    peak_in_use: int
    waiting: int


@dataclass(frozen=True)
class MigrationSlotsStatus:
    hosts: tuple[HostUse, ...]
    holders: tuple[PairHolder, ...]
    waiters: tuple[PairWaiter, ...]


@dataclass(frozen=True)
class MigrationSlotsInput:
    """Start (or continue as new) the pair-slot entity, with everything carried across runs.

    Attributes:
        continue_as_new_after_events: continue as new past this history length; 0 means the book's own length
            (MIGRATION_SLOTS_RUN_EVENTS) on runs that know it, only the SDK's suggestion on runs that predate it.
        resend: holders whose grant the previous run had still to signal (it hands over without waiting on them).
    """

    hosts: tuple[HostCapacity, ...] = ()
    holders: tuple[PairHolder, ...] = ()
    waiters: tuple[PairWaiter, ...] = ()
    peaks: tuple[HostLimit, ...] = ()
    bypass_limit: int = SLOT_BYPASS_LIMIT
    continue_as_new_after_events: int = 0
    resend: tuple[str, ...] = ()


# How long one run of the slot book grows before it continues as new. The book takes a signal from every move at its
# start and its end, so in a campaign it never goes quiet for a hand-over: the server refuses the task that continues
# as new when a signal came in meanwhile (UNHANDLED_COMMAND), and the worker then replays the whole run before it can
# try again. Replay costs about 0.6 ms per event here unloaded (2.6 s for a run of 4,100 events, the length at which
# the SDK suggests continuing) and several times that on a worker busy moving VMs: in a 10,000-VM campaign those
# replays outran the task timeout again and again and one run reached 11,847 events. At 1,000 events a hand-over
# that fails replays in well under a second, and one run still serves about a hundred moves.
MIGRATION_SLOTS_RUN_EVENTS = 1000
# The book's workflow task timeout, given at its start and at every continue-as-new: a replay on a loaded worker
# finishes within it, where Temporal's default of 10 s timed out and re-opened the book to signals.
MIGRATION_SLOTS_TASK_TIMEOUT = timedelta(seconds=60)


# -- Preflight: read-only facts from both hosts -> a report of concerns ------------------------------------


class Severity(enum.StrEnum):
    """How much a preflight concern weighs."""

    BLOCKER = "blocker"  # stops the run before any change
    WARNING = "warning"  # the run goes on; auto-remediable ones are fixed by the saga
    INFO = "info"  # for the record (e.g. the saga removes HA)


class ConcernId(enum.StrEnum):
    """Every concern preflight can report: stable ids that the saga, the CLI and reports match on."""

    BACKUP_IN_PROGRESS = "backup-in-progress"
    BINDING_MISSING = "binding-missing"
    CHECKPOINTS = "checkpoints"
    COMPARE_VM_AFTER_HA_REMOVAL = "compare-vm-after-ha-removal"
    COMPARE_VM_FAILED = "compare-vm-failed"
    COMPARE_VM_INCOMPATIBILITY = "compare-vm-incompatibility"
    CONFIG_VERSION_UNSUPPORTED = "config-version-unsupported"
    CPU_VENDOR_MISMATCH = "cpu-vendor-mismatch"
    DESTINATION_FILE_IN_USE = "destination-file-in-use"
    DESTINATION_LEFTOVERS = "destination-leftovers"
    DESTINATION_PATH = "destination-path"
    DEVICE_INCOMPATIBLE = "device-incompatible"
    DIFFERENT_DOMAIN = "different-domain"
    DISK_SPACE = "disk-space"
    FIBRE_CHANNEL_SAN_MISSING = "fibre-channel-san-missing"
    FIREWALL_6600_CLOSED = "firewall-6600-closed"
    HA_LOST = "ha-lost"
    HA_RESTORED_ON_DESTINATION = "ha-restored-on-destination"
    ISO_MISSING_ON_DESTINATION = "iso-missing-on-destination"
    LIVE_MIGRATION_DISABLED = "live-migration-disabled"
    MEMORY = "memory"
    PASSTHROUGH_DISK = "passthrough-disk"
    PORT_6600_UNREACHABLE = "port-6600-unreachable"
    PROCESSOR_COMPATIBILITY = "processor-compatibility"
    PROCESSOR_INCOMPATIBLE = "processor-incompatible"
    PROCESSOR_SETTINGS = "processor-settings"
    REMOTEFX_INCOMPATIBLE = "remotefx-incompatible"
    SAVED_STATE_INCOMPATIBLE = "saved-state-incompatible"
    SMB2_DISABLED = "smb2-disabled"
    SWITCH_MISSING = "switch-missing"
    VHD_NOT_REACHABLE = "vhd-not-reachable"
    VM_ALREADY_ON_DESTINATION = "vm-already-on-destination"
    VM_CLUSTERED = "vm-clustered"
    VM_FILES_MISSING = "vm-files-missing"
    VM_NAME_AMBIGUOUS = "vm-name-ambiguous"
    VM_NAME_CLASH = "vm-name-clash"
    VM_NAME_NOT_A_FOLDER = "vm-name-not-a-folder"
    VM_NOT_FOUND = "vm-not-found"
    VM_ON_BOTH_HOSTS = "vm-on-both-hosts"


SEVERITY_BLOCKER = Severity.BLOCKER
SEVERITY_WARNING = Severity.WARNING
SEVERITY_INFO = Severity.INFO
PREFLIGHT_BLOCKED = "PreflightBlocked"  # configuration: the report (as details) holds at least one blocker


@dataclass(frozen=True)
class PreflightInput:
    """Check that `vm` on `source` can be live-migrated to `destination`.

    `storage_path` is where the destination keeps the VM's files (Move-VM -DestinationStoragePath); None with
    `include_storage` means the destination's default paths (its VirtualMachinePath). `include_storage` False
    is a live move without storage (only for VMs whose files are on shared storage).
    """

    vm: str
    source: str
    destination: str
    storage_path: str | None = None
    include_storage: bool = True


@dataclass(frozen=True)
class Concern:
    """One finding: `id` is stable (e.g. `switch-missing`), `severity` is blocker, warning or info."""

    id: ConcernId
    severity: Severity
    message: str
    remedy: str = ""
    auto_remediable: bool = False
    host: str = ""


@dataclass(frozen=True)
class PreflightFacts:
    """The facts the saga acts on, typed (the report's `facts` mapping is a summary for people).

    Attributes:
        vm_id: the VM's Id on the source, once its name resolved to exactly one VM ("" otherwise).
        clustered: the VM is highly available (Get-VM IsClustered).
        cluster: the source's cluster when the VM is clustered.
        destination_cluster: the cluster the destination is a node of ("" when it is none).
        move_bytes: memory plus VHD file bytes: what the move carries at least.
        vm_files: the VM's files on the source as `read_vm` reports them (configuration files that exist, then
            VHD paths), when `vm_read` is True.
        vm_read: preflight read the VM as `read_vm` does (its Id, files, clustered flag): the saga uses these
            facts instead of reading them again, unless it waited (approval) in between.
        settings: the live-migration settings of the source and the destination as preflight read them, what a
            settings step restores when the move fails (empty: the saga reads them itself).
        storage_path: where the move puts the VM's files on the destination, as preflight checked it (the one
            given, else the destination's VirtualMachinePath with a folder named after the VM; "" if neither).
    """

    vm_id: str = ""
    clustered: bool = False
    cluster: str = ""
    destination_cluster: str = ""
    move_bytes: int = 0
    vm_files: tuple[str, ...] = ()
    vm_read: bool = False
    settings: tuple[HostMigrationSettings, ...] = ()
    storage_path: str = ""


@dataclass(frozen=True)
class PreflightReport:
    """What preflight found. `facts` is a flat summary of plain values (state, version, vendors, free space...);
    `round_trips` counts the PSRP round trips per host (pool open and close included)."""

    vm: str
    source: str
    destination: str
    concerns: tuple[Concern, ...] = ()
    facts: dict[str, str] | None = None
    round_trips: dict[str, int] | None = None
    # None only in reports recorded before it existed (replayed histories).
    summary: PreflightFacts | None = None

    @property
    def blockers(self) -> tuple[Concern, ...]:
        return tuple(concern for concern in self.concerns if concern.severity == SEVERITY_BLOCKER)

    @property
    def ok(self) -> bool:
        return not self.blockers


# -- The migration saga: one VM from its source to its destination ----------------------------------------

TASK_QUEUE = "snlm-migrations"
# The move activity runs on a queue of its own, with its own concurrency: a move holding both hosts' slots never
# waits behind reads for a worker, and reads never queue behind long moves.
MOVE_TASK_QUEUE_SUFFIX = "-moves"


def move_task_queue(task_queue: str) -> str:
    """The queue of the move activity for workflows on `task_queue`."""
    return task_queue + MOVE_TASK_QUEUE_SUFFIX


# A campaign follows the moves an earlier run of it started through watch_move activities, each waiting as long as
# its move: on the main queue they took every activity slot once more moves were in flight than slots, and the
# moves, whose own steps wait for those slots, never ended (the 10,000-VM run stalled at its first
# continue-as-new). They run on a queue of their own; a watch holds no thread.
WATCH_TASK_QUEUE_SUFFIX = "-watch"


def watch_task_queue(task_queue: str) -> str:
    """The queue of the campaign's watch_move activity for workflows on `task_queue`."""
    return task_queue + WATCH_TASK_QUEUE_SUFFIX


class ActivityName(enum.StrEnum):
    """Every activity's name: the worker registers the activities by these, the workflows call them by these."""

    PREFLIGHT = "preflight"
    PREFLIGHT_BATCH = "preflight_batch"
    READ_VM = "read_vm"
    SNAPSHOT_CLUSTER_ROLE = "snapshot_cluster_role"
    REMOVE_CLUSTER_ROLE = "remove_cluster_role"
    RESTORE_CLUSTER_ROLE = "restore_cluster_role"
    READ_MIGRATION_SETTINGS = "read_migration_settings"
    ENSURE_MIGRATION_SETTINGS = "ensure_migration_settings"
    RESTORE_MIGRATION_SETTINGS = "restore_migration_settings"
    PURGE_TICKETS = "purge_tickets"
    REMEDIATE = "remediate"
    CLEAN_DESTINATION = "clean_destination"
    START_OR_ATTACH_MOVE = "start_or_attach_move"
    VERIFY_MOVE = "verify_move"
    ENSURE_DELEGATION = "ensure_delegation"
    REVERT_DELEGATION = "revert_delegation"
    READ_COMPUTER_DELEGATION = "read_computer_delegation"
    WATCH_MOVE = "watch_move"
    SURVEY_HOST = "survey_host"
    FORECAST_CAMPAIGN = "forecast_campaign"


MIGRATE_VM_WORKFLOW_PREFIX = "snlm-vm-"

# Search attributes (Keyword) on every migration workflow, so an operator can filter in the Temporal UI.
SA_VM = "SnlmVm"
SA_SOURCE = "SnlmSource"
SA_DESTINATION = "SnlmDestination"
SA_CAMPAIGN = "SnlmCampaign"
SA_TICKET = "SnlmTicket"
SA_STEP = "SnlmStep"
SEARCH_ATTRIBUTES = (SA_VM, SA_SOURCE, SA_DESTINATION, SA_CAMPAIGN, SA_TICKET, SA_STEP)

APPROVAL_TIMED_OUT = "ApprovalTimedOut"  # the approval deadline passed: nothing was changed
APPROVAL_REJECTED = "ApprovalRejected"
DELEGATION_NOT_CONFIGURED = "DelegationNotConfigured"  # policy `verify` found entries missing
MOVE_FAILED = "MoveFailed"  # the host's migration job ended without moving the VM
MOVE_CANCELLED = "MoveCancelled"
VERIFY_FAILED = "VerifyFailed"  # the VM is not where it should be after the move (or is in two places)
CLUSTER_ROLE_FAILED = "ClusterRoleFailed"
# The VM is highly available and the destination is not a cluster node: the request must say whether to drop HA
# (`--ha drop`) before anything changes; nothing was changed.
HA_CHOICE_REQUIRED = "HaChoiceRequired"
HA_RESTORE_IMPOSSIBLE = "HaRestoreImpossible"  # `--ha restore` asked for a destination that is no cluster node
GUEST_NOT_ANSWERING = "GuestNotAnswering"  # moved, but the guest's heartbeat was not OK within the policy's time


def migrate_vm_workflow_id(vm: str, source: str) -> str:
    """`snlm-vm-<vm>@<source>`: one id per move request, so a duplicate request finds the running move.

    Hyper-V names compare case-insensitively, so the id is lower-cased.
    """
    return f"{MIGRATE_VM_WORKFLOW_PREFIX}{vm.lower()}@{source.lower()}"


class Step(enum.StrEnum):
    """The saga's steps, in order; `SA_STEP` and the `current_step` query carry these values."""

    PENDING = "pending"
    PREFLIGHT = "preflight"
    APPROVAL = "approval"
    CLUSTER = "cluster"
    DELEGATION = "delegation"
    SETTINGS = "settings"
    # Prepared ahead by its campaign (MigrateVmInput.prepared_ahead): waiting for the campaign's `go`, holding no
    # slot, nothing done to the VM yet.
    READY = "ready"
    MOVE = "move"
    VERIFY = "verify"
    COMPENSATING = "compensating"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class DelegationPolicy(enum.StrEnum):
    """`manage` writes the delegation entries, `verify` only reads and reports, `skip` leaves it to others."""

    MANAGE = "manage"
    VERIFY = "verify"
    SKIP = "skip"


class HaChoice(enum.StrEnum):
    """What happens to a clustered VM's high availability when it moves.

    `restore` makes it highly available again in the destination's cluster after the move (the destination must
    be a cluster node); `drop` leaves it a standalone VM on the destination. Unset (None in the policy), snlm
    restores HA when the destination is a cluster node and otherwise refuses to start until the request chooses.
    """

    RESTORE = "restore"
    DROP = "drop"


class GuestCheck(enum.StrEnum):
    """What verify does when the moved guest's heartbeat is not OK within the policy's time."""

    WARN = "warn"  # the move succeeded; the result carries a warning
    FAIL = "fail"  # the run fails with GuestNotAnswering (the VM stays on the destination: a move is not undone)


class HaOutcome(enum.StrEnum):
    """Where a clustered VM's role is at the end of a run (`MigrateVmResult.ha`)."""

    NOT_CLUSTERED = "not-clustered"
    RESTORED_ON_DESTINATION = "restored-on-destination"
    DROPPED = "dropped"


class MigrationAuthentication(enum.StrEnum):
    """VMHost VirtualMachineMigrationAuthenticationType (catalogue section 4)."""

    KERBEROS = "Kerberos"
    CREDSSP = "CredSSP"


class MigrationPerformance(enum.StrEnum):
    """VMHost VirtualMachineMigrationPerformanceOption (catalogue section 4)."""

    TCPIP = "TCPIP"
    COMPRESSION = "Compression"
    SMB = "SMB"


@dataclass(frozen=True)
class MigrationPolicy:
    """What a move may change and undo. Defaults are what a careful administrator does by hand.

    Attributes:
        delegation: manage / verify / skip (see DelegationPolicy).
        delegation_mode: kerberos-only / any-protocol / auto; None means the worker's configured mode.
        revert_delegation: on failure, remove the delegation entries this run added.
        restore_settings: on failure, put each host's live-migration settings back as they were.
        ha: what happens to a clustered VM's high availability (HaChoice); None decides by the destination:
            restored when it is a cluster node, otherwise the run refuses to start (HaChoiceRequired).
        require_approval: wait for the `approve` update before changing anything.
        approval_timeout_seconds: how long to wait for it; past it the run fails with nothing changed.
        authentication: the live-migration authentication to set on both hosts (Kerberos or CredSSP).
        performance: TCPIP, Compression or SMB.
        migration_networks: subnets for live migration on both hosts; empty keeps the hosts' own choice
            (and enables "use any network" only when a host has neither).
        eject_missing_iso: eject an ISO the destination lacks instead of failing (auto-remediation).
        max_migrations_per_host: never ask a host for more concurrent moves than this (the host's own
            limit always applies as well).
        move_timeout_seconds: the longest a single move may run before it is cancelled.
        slot_lease_seconds: the lease of the move's slots (MigrationSlots): each time it runs out the entity asks
            the move's workflow, one signal, and keeps the slots while it runs, so a run terminated mid-move frees
            both hosts within this time, and a move whose workers are down keeps them. Between
            SLOT_LEASE_MIN_SECONDS and SLOT_LEASE_MAX_SECONDS (see slot_lease_problem; runs started before the
            pair grant renew it themselves).
        slot_book: which book of host slots the move takes its slots from ("" the namespace's one; see
            migration_slots_workflow_id).
        move_heartbeat_seconds: the move activity's heartbeat timeout. The percent a status shows is as fresh as
            0.8 x this, a cancel reaches the host's job within it, a dead worker's move is retried after it, and
            every heartbeat is a billed Temporal action: 30 s costs 2.5 actions per minute of move.
        guest_timeout_seconds: how long verify waits for the moved guest's heartbeat to read OK (a guest shows
            NoContact or LostCommunication for a while after some moves; catalogue 6.4).
        guest_check: what a guest that is still not OK then means (GuestCheck).
    """

    delegation: DelegationPolicy = DelegationPolicy.MANAGE
    delegation_mode: DelegationMode | None = None
    revert_delegation: bool = False
    restore_settings: bool = True
    ha: HaChoice | None = None
    require_approval: bool = False
    approval_timeout_seconds: float = 24 * 3600
    authentication: MigrationAuthentication = MigrationAuthentication.KERBEROS
    performance: MigrationPerformance = MigrationPerformance.COMPRESSION
    migration_networks: tuple[str, ...] = ()
    eject_missing_iso: bool = True
    max_migrations_per_host: int | None = None
    move_timeout_seconds: float = 12 * 3600
    slot_lease_seconds: float = 300.0
    slot_book: str = ""
    move_heartbeat_seconds: float = 30.0
    guest_timeout_seconds: float = 120.0
    guest_check: GuestCheck = GuestCheck.WARN


@dataclass(frozen=True)
class MigrateVmInput:
    """Move `vm` from `source` to `destination` (host names as in the inventory).

    `storage_path` is the destination folder for the VM's files (Move-VM -DestinationStoragePath); None puts
    them under the destination host's VirtualMachinePath, in a folder named after the VM.

    `prepared_ahead`: started by its campaign before its turn. Preflight, delegation and the hosts' settings run at
    once; then the run waits in step `ready` (holding no slot, the VM untouched: its cluster role is taken only
    after the wait) for the `go` signal its campaign sends when the planner starts the move.
    """

    vm: str
    source: str
    destination: str
    storage_path: str | None = None
    policy: MigrationPolicy = MigrationPolicy()
    campaign: str = ""
    ticket: str = ""
    prepared_ahead: bool = False


@dataclass(frozen=True)
class ApproveRequest:
    approver: str
    approved: bool = True
    comment: str = ""


@dataclass(frozen=True)
class MigrationProgress:
    """The `progress` query: where the saga is and how far the host's migration job got."""

    vm: str
    source: str
    destination: str
    step: Step
    percent: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    attempt: int = 0
    waiting_for: str = ""  # "approval", "slot on HV01", ...


# Activity inputs and outputs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class VmOnHost:
    """A VM as one host knows it."""

    vm: str
    host: str


@dataclass(frozen=True)
class ClusterRoleSnapshot:
    """Everything needed to make a VM highly available again as it was (hyperv-facts "Cluster HA").

    `clustered` False means the VM had no cluster role: nothing was removed and nothing is to restore.
    """

    vm: str
    host: str
    clustered: bool
    cluster: str = ""
    group: str = ""
    owner_node: str = ""
    preferred_owners: tuple[str, ...] = ()
    priority: int = 2000
    anti_affinity_class_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class RestoreClusterRoleInput:
    """Add the VM's cluster role back on `host`'s cluster, with the snapshot's owners and settings."""

    snapshot: ClusterRoleSnapshot
    host: str
    vm_id: str = ""  # the VM's Id: a name can match several VMs (catalogue 6.1)


@dataclass(frozen=True)
class PurgeTicketsInput:
    """`klist purge -li 0x3e7` on each host, so the machine account fetches tickets with the new delegation."""

    hosts: tuple[str, ...]


@dataclass(frozen=True)
class HostMigrationSettings:
    """A host's live-migration settings (Get-VMHost plus Get-VMMigrationNetwork)."""

    host: str
    enabled: bool
    authentication: str
    performance: str
    use_any_network: bool
    networks: tuple[tuple[str, int], ...] = ()  # (subnet, priority)
    max_vm_migrations: int = 2
    firewall_rule_enabled: bool = True


@dataclass(frozen=True)
class HostRef:
    host: str


@dataclass(frozen=True)
class EnsureSettingsInput:
    host: str
    authentication: MigrationAuthentication = MigrationAuthentication.KERBEROS
    performance: MigrationPerformance = MigrationPerformance.COMPRESSION
    migration_networks: tuple[str, ...] = ()


@dataclass(frozen=True)
class EnsureSettingsResult:
    """`previous` is what the host had before (what restore puts back); `current` what it has now."""

    previous: HostMigrationSettings
    current: HostMigrationSettings
    changed: bool


@dataclass(frozen=True)
class RemediateInput:
    """Fix an auto-remediable concern before the move (today: eject an ISO the destination lacks)."""

    vm: str
    host: str
    concern_ids: tuple[str, ...]


@dataclass(frozen=True)
class RemediateResult:
    fixed: tuple[str, ...] = ()


@dataclass(frozen=True)
class MoveInput:
    """Start Move-VM for `vm` (id `vm_id`) from `source`, or re-attach to the migration already running."""

    vm: str
    vm_id: str
    source: str
    destination: str
    storage_path: str | None = None
    # Memory plus VHD bytes as preflight read them: Msvm_MigrationJob reports only a percent, so the bytes the
    # progress shows are this estimate times the percent (memory pre-copy passes make the real figure larger).
    bytes_estimate: int = 0


@dataclass(frozen=True)
class MoveResult:
    """`started` False means this attempt re-attached to a running job, or found the VM already moved."""

    vm: str
    destination: str
    started: bool
    already_moved: bool = False
    job_id: str = ""
    bytes_total: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class MoveHeartbeat:
    """Heartbeat details of the move activity: what the next attempt needs to pick up where this one stopped."""

    job_id: str
    percent: int
    bytes_done: int = 0
    bytes_total: int = 0


@dataclass(frozen=True)
class CleanupInput:
    """Remove what a failed move left on `host` for `vm_id` (a planned VM, partial disks)."""

    vm: str
    vm_id: str
    host: str


@dataclass(frozen=True)
class CleanupResult:
    removed_planned_vm: bool = False
    removed_files: tuple[str, ...] = ()


@dataclass(frozen=True)
class VerifyInput:
    vm: str
    vm_id: str
    source: str
    destination: str
    source_files: tuple[str, ...] = ()  # the VM's files on the source before the move
    # How long to wait for the guest's heartbeat to read OK (0: read it once).
    guest_timeout_seconds: float = 0.0


@dataclass(frozen=True)
class VerifyResult:
    """The move's outcome as the hosts see it; `cleaned_source_files` are leftovers verify removed."""

    running_on_destination: bool
    gone_from_source: bool
    cleaned_source_files: tuple[str, ...] = ()
    guest_answers: bool = True
    destination_path: str = ""
    guest_heartbeat: str = ""  # the VM's Heartbeat as last read (OkApplicationsHealthy, NoContact, ...)


@dataclass(frozen=True)
class VmFacts:
    """What the saga reads of a VM before it changes anything: its id and files, for the move and verify."""

    vm: str
    vm_id: str
    host: str
    files: tuple[str, ...] = ()
    clustered: bool = False


@dataclass(frozen=True)
class CompensationOutcome:
    step: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class MigrateVmResult:
    vm: str
    source: str
    destination: str
    moved: bool
    already_there: bool = False
    delegation_added: tuple[str, ...] = ()
    settings_changed: tuple[str, ...] = ()
    cleaned_source_files: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    ha: HaOutcome = HaOutcome.NOT_CLUSTERED
    ha_cluster: str = ""  # the cluster that holds the VM's role now ("" when it is not highly available)
    guest_answers: bool = True


# -- Preflight of several VMs of one host pair: each host's reads made once for all -----------------------


@dataclass(frozen=True)
class PreflightVm:
    """One VM of a batch preflight: its name on the source and, optionally, where the destination keeps its
    files (as `PreflightInput.storage_path`; None: the destination's VirtualMachinePath)."""

    vm: str
    storage_path: str | None = None


@dataclass(frozen=True)
class PreflightBatchInput:
    """Check that each of `vms` on `source` can be live-migrated, with its storage, to `destination`: one
    preflight per VM, the reads of each host made once for all of them."""

    source: str
    destination: str
    vms: tuple[PreflightVm, ...]


@dataclass(frozen=True)
class PreflightBatchReport:
    """One report per VM, in the order of the request, each what `preflight` alone finds for that VM (its
    `round_trips` counting only the round trips made for that VM alone). `round_trips` counts the whole batch's
    PSRP round trips per host (the sessions' opens included when the batch opened them)."""

    reports: tuple[PreflightReport, ...]
    round_trips: dict[str, int]


# -- Campaigns: many moves, in waves, inside maintenance windows -------------------------------------------

CAMPAIGN_WORKFLOW_PREFIX = "snlm-campaign-"
CAMPAIGN_NAME_MAX = 100
# A run continues as new well before Temporal's hard history limits; the SDK's own suggestion comes first when
# it comes earlier.
CAMPAIGN_HISTORY_EVENTS_LIMIT = 8000
# The Campaign's workflow task timeout, given at every start (a run continued as new keeps it). A campaign of
# 10,000 moves has heavy tasks: the one that continues it as new serializes the whole plan, and a worker whose
# threads are busy moving VMs runs it slower still; at Temporal's default of 10 s that task timed out again and
# again (TMPRL1104 at 11.3 s, "Workflow task not found") and the campaign stalled. A task of a worker that died is
# retried after this long instead.
CAMPAIGN_TASK_TIMEOUT = timedelta(seconds=60)
PLAN_INVALID = "PlanInvalid"  # configuration: a plan file or its entries (every error, with file, line and field)
CAMPAIGN_STATE_INVALID = "CampaignStateInvalid"  # pause / resume / retry asked of a campaign in the wrong state


def campaign_workflow_id(name: str) -> str:
    """`snlm-campaign-<name>`: one campaign per name, so starting a plan twice finds the running campaign."""
    return f"{CAMPAIGN_WORKFLOW_PREFIX}{name}"


class Weekday(enum.StrEnum):
    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"


@dataclass(frozen=True)
class MaintenanceWindow:
    """A weekly recurring window in which moves may start: on each of `days` (every day when empty), from
    `start` ("HH:MM", local time in `time_zone`, an IANA name) for `duration_minutes`. A window may run past
    midnight; daylight-saving days are computed in the zone (a start that does not exist that day is moved on by
    the gap, as zoneinfo does)."""

    start: str
    duration_minutes: int
    days: tuple[Weekday, ...] = ()
    time_zone: str = "UTC"


class WaveFailurePolicy(enum.StrEnum):
    """What a wave does when its moves fail: go on with the rest, or pause the campaign after N failures."""

    CONTINUE = "continue"
    PAUSE = "pause"


class Scheduler(enum.StrEnum):
    """The order moves start in. `planner` is snlm's (workflows/scheduling.py); the others are the baselines the
    makespan benchmark compares it with: first-in-first-out with a cap per source host (Forklift's rule), with
    caps on both hosts, and a seeded random order with caps on both hosts."""

    PLANNER = "planner"
    FIFO_SOURCE_CAP = "fifo-source"
    FIFO = "fifo"
    RANDOM = "random"


@dataclass(frozen=True)
class CampaignMove:
    """One VM to move. The estimates feed the planner and the forecast (0: unknown, the plan's defaults apply):
    `memory_bytes` and `disk_bytes` from preflight (memory assigned, VHD file sizes), `dirty_bytes_per_second`
    how fast the guest writes memory (pre-copy passes repeat what it dirtied)."""

    vm: str
    source: str
    destination: str
    storage_path: str | None = None
    priority: int = 0
    memory_bytes: int = 0
    disk_bytes: int = 0
    dirty_bytes_per_second: float = 0.0

    @property
    def key(self) -> str:
        """The move's identity in a campaign: the one-VM path's workflow id (the VM and its source)."""
        return migrate_vm_workflow_id(self.vm, self.source)


@dataclass(frozen=True)
class CampaignWave:
    """Moves that start after every move of the wave before has ended. With `on_failure` pause, the campaign
    pauses once `pause_after_failures` of this wave's moves failed (an operator resumes or cancels it)."""

    name: str
    moves: tuple[CampaignMove, ...]
    on_failure: WaveFailurePolicy = WaveFailurePolicy.CONTINUE
    pause_after_failures: int = 1


@dataclass(frozen=True)
class HostProfile:
    """What the planner and the forecast know of a host: its concurrent migrations (the host's own
    MaximumVirtualMachineMigrations, or less by policy) and its migration adapter's speed in bits per second
    (full duplex: as much in as out)."""

    host: str
    slots: int = HYPERV_DEFAULT_MAX_MIGRATIONS
    link_bits_per_second: float = 10e9


@dataclass(frozen=True)
class CampaignPlan:
    """A whole campaign as validated from a plan file: waves in order, the windows moves may start in (none:
    any time), the policy of every move, the hosts' profiles and the scheduler."""

    name: str
    waves: tuple[CampaignWave, ...]
    windows: tuple[MaintenanceWindow, ...] = ()
    policy: MigrationPolicy = MigrationPolicy()
    hosts: tuple[HostProfile, ...] = ()
    scheduler: Scheduler = Scheduler.PLANNER
    seed: int = 0  # the random scheduler's seed
    # Moves per host started before their turn (preflight, delegation, settings), so each is ready to move the
    # moment the planner gives it its slots; 0 starts every move only at its turn.
    prepare_ahead: int = 1
    # Seconds from a move's start to its first byte as this estate shows them (a pilot wave measures them), for the
    # planner and the forecast; None: the transfer model's own (scheduling.TransferModel.setup_seconds).
    setup_seconds: float | None = None


# The most moves per host a campaign prepares ahead: each holds its hosts' settings ensured and a run open.
PREPARE_AHEAD_MAX = 8


class MoveState(enum.StrEnum):
    """Where one move of a campaign is. `blocked` moves were never started (the campaign's preflight found a
    blocker); `attached` ones were already running under the same id (a ticket, another campaign) and are
    followed, not started again."""

    PENDING = "pending"
    RUNNING = "running"
    MOVED = "moved"
    ALREADY_THERE = "already-there"
    BLOCKED = "blocked"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def ended(self) -> bool:
        return self not in (MoveState.PENDING, MoveState.RUNNING)

    @property
    def ok(self) -> bool:
        return self in (MoveState.MOVED, MoveState.ALREADY_THERE)


# One letter per state: a campaign carries the state of every move across continue-as-new in one string.
MOVE_STATE_CODES: dict[MoveState, str] = {
    MoveState.PENDING: "p",
    MoveState.RUNNING: "r",
    MoveState.MOVED: "m",
    MoveState.ALREADY_THERE: "a",
    MoveState.BLOCKED: "b",
    MoveState.FAILED: "f",
    MoveState.CANCELLED: "c",
}
MOVE_STATES_BY_CODE = {code: state for state, code in MOVE_STATE_CODES.items()}


class CampaignPhase(enum.StrEnum):
    """What a campaign is doing. `ended` means every move ended: the campaign stays open for `retry-failed`
    until it is closed (or its linger time passes)."""

    CHECKING = "checking"
    RUNNING = "running"
    WAITING_FOR_WINDOW = "waiting-for-window"
    PAUSED = "paused"
    CANCELLING = "cancelling"
    ENDED = "ended"
    CLOSED = "closed"


@dataclass(frozen=True)
class WaveSpec:
    """A wave without its moves (they travel in `PackedMoves`)."""

    name: str
    on_failure: WaveFailurePolicy = WaveFailurePolicy.CONTINUE
    pause_after_failures: int = 1


@dataclass(frozen=True)
class PackedMoves:
    """Every move of a campaign, column by column: one payload holds 10,000 moves (Temporal refuses payloads over
    2 MB; one dataclass per move would pass it near 10,000). Hosts are named once and referenced by index; sizes
    are MiB, dirty rates KiB/s; an empty storage path means the destination's default."""

    hosts: tuple[str, ...] = ()
    vm: tuple[str, ...] = ()
    source: tuple[int, ...] = ()
    destination: tuple[int, ...] = ()
    wave: tuple[int, ...] = ()
    storage_path: tuple[str, ...] = ()
    priority: tuple[int, ...] = ()
    memory_mib: tuple[int, ...] = ()
    disk_mib: tuple[int, ...] = ()
    dirty_kib_per_second: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self.vm)

    def move(self, index: int) -> CampaignMove:
        storage = self.storage_path[index]
        return CampaignMove(
            vm=self.vm[index],
            source=self.hosts[self.source[index]],
            destination=self.hosts[self.destination[index]],
            storage_path=storage or None,
            priority=self.priority[index],
            memory_bytes=self.memory_mib[index] * 2**20,
            disk_bytes=self.disk_mib[index] * 2**20,
            dirty_bytes_per_second=float(self.dirty_kib_per_second[index] * 2**10),
        )


def pack_moves(waves: tuple[CampaignWave, ...]) -> PackedMoves:
    """The moves of `waves`, in wave order, packed (see PackedMoves)."""
    hosts: dict[str, int] = {}

    def host(name: str) -> int:
        return hosts.setdefault(name, len(hosts))

    columns: dict[str, list[object]] = {name: [] for name in PackedMoves.__dataclass_fields__ if name != "hosts"}
    for index, wave in enumerate(waves):
        for move in wave.moves:
            columns["vm"].append(move.vm)
            columns["source"].append(host(move.source))
            columns["destination"].append(host(move.destination))
            columns["wave"].append(index)
            columns["storage_path"].append(move.storage_path or "")
            columns["priority"].append(move.priority)
            columns["memory_mib"].append(-(-move.memory_bytes // 2**20))
            columns["disk_mib"].append(-(-move.disk_bytes // 2**20))
            columns["dirty_kib_per_second"].append(round(move.dirty_bytes_per_second / 2**10))
    return PackedMoves(hosts=tuple(hosts), **{name: tuple(values) for name, values in columns.items()})  # type: ignore[arg-type]


@dataclass(frozen=True)
class CampaignCarry:
    """What a run hands the next across continue-as-new: each move's state (one MOVE_STATE_CODES letter per
    move, in PackedMoves order), start and end times (seconds after `epoch`, 0 when not yet), the errors of the
    moves that failed, the ones running that this campaign did not start, the ones prepared ahead (started, still
    pending: waiting for their turn), and the counters."""

    states: str
    started: tuple[int, ...]
    ended: tuple[int, ...]
    errors: dict[int, str]
    attached: tuple[int, ...] = ()
    phase: CampaignPhase = CampaignPhase.RUNNING
    wave: int = 0
    paused_reason: str = ""
    runs: int = 1
    rounds: int = 0
    epoch: float = 0.0
    prepared: tuple[int, ...] = ()
    # The planner's rule the first run's forecast chose (None in runs carried before the planner had rules).
    planner_rule: int | None = None


@dataclass(frozen=True)
class CampaignInput:
    """A campaign to run: its plan without the moves (`waves` are the wave specs), the moves packed, where its
    moves run (`task_queue`, whose slot book they share), whether it preflights every move first (`check`), and
    on a continued run what the last one carried."""

    name: str
    waves: tuple[WaveSpec, ...]
    moves: PackedMoves
    windows: tuple[MaintenanceWindow, ...] = ()
    policy: MigrationPolicy = MigrationPolicy()
    hosts: tuple[HostProfile, ...] = ()
    scheduler: Scheduler = Scheduler.PLANNER
    seed: int = 0
    task_queue: str = ""
    check: bool = True
    linger_seconds: float = 7 * 24 * 3600
    # Continue as new past this many events (or when the SDK suggests it first).
    history_limit: int = CAMPAIGN_HISTORY_EVENTS_LIMIT
    carry: CampaignCarry | None = None
    prepare_ahead: int = 1
    setup_seconds: float | None = None  # CampaignPlan.setup_seconds


def campaign_input(plan: CampaignPlan, *, task_queue: str = "", check: bool = True) -> CampaignInput:
    return CampaignInput(
        name=plan.name,
        waves=tuple(WaveSpec(w.name, w.on_failure, w.pause_after_failures) for w in plan.waves),
        moves=pack_moves(plan.waves),
        windows=plan.windows,
        policy=plan.policy,
        hosts=plan.hosts,
        scheduler=plan.scheduler,
        seed=plan.seed,
        task_queue=task_queue,
        check=check,
        prepare_ahead=plan.prepare_ahead,
        setup_seconds=plan.setup_seconds,
    )


@dataclass(frozen=True)
class CampaignCounts:
    pending: int = 0
    running: int = 0
    moved: int = 0
    already_there: int = 0
    blocked: int = 0
    failed: int = 0
    cancelled: int = 0


@dataclass(frozen=True)
class CampaignProgress:
    """The `progress` query: counts by state, bytes (estimates: memory plus disks) moved and left, the current
    wave, the forecast end (epoch seconds, 0 when unknown) and why the campaign waits, if it does."""

    name: str
    phase: CampaignPhase
    counts: CampaignCounts
    total: int
    wave: int
    waves: tuple[str, ...]
    bytes_moved: int
    bytes_left: int
    forecast_end: float = 0.0
    forecast_makespan_seconds: float = 0.0
    window_opens: float = 0.0  # epoch seconds of the next window's start, while waiting for it
    paused_reason: str = ""
    run: int = 1
    duplicates: int = 0  # entries of the plan that named a move already listed (they count nowhere)
    history_events: int = 0
    # Per wave, in order: its moves, and how many of them ended.
    wave_sizes: tuple[int, ...] = ()
    waves_ended: tuple[int, ...] = ()
    # Of the pending moves, those prepared ahead: checked, their hosts set, waiting for their turn.
    ready: int = 0
    # The planner's rule this run decides with (workflows.scheduling.PLANNER_RULES), chosen by its forecast.
    planner_rule: int = 0


@dataclass(frozen=True)
class MoveRecord:
    """One move as the campaign saw it (the `moves` query; times are epoch seconds, 0 when not yet)."""

    index: int
    vm: str
    source: str
    destination: str
    wave: int
    state: MoveState
    started: float = 0.0
    ended: float = 0.0
    error: str = ""
    bytes: int = 0
    attached: bool = False


@dataclass(frozen=True)
class MovesPage:
    """A page of the `moves` query: `records` from `offset`, `total` in all."""

    records: tuple[MoveRecord, ...]
    offset: int
    total: int


# The most records one `moves` query answers (a client pages with `offset`): 5,000 records made 867 KB, past the
# 512 KB at which Temporal warns of a large payload (TMPRL1103); 2,000 stay near 350 KB.
MOVES_PAGE_MAX = 2000


@dataclass(frozen=True)
class MovesQuery:
    offset: int = 0
    limit: int = 1000
    states: tuple[MoveState, ...] = ()  # empty: every state


@dataclass(frozen=True)
class CampaignCommand:
    """pause / resume / cancel / retry-failed / close: who asked and why (kept in the campaign's history)."""

    by: str = ""
    reason: str = ""


@dataclass(frozen=True)
class CampaignAnswer:
    """What a campaign command did: the phase after it and a sentence for the operator."""

    phase: CampaignPhase
    message: str
    affected: int = 0


@dataclass(frozen=True)
class CampaignResult:
    name: str
    counts: CampaignCounts
    total: int
    runs: int
    started: float
    ended: float


@dataclass(frozen=True)
class WatchMoveInput:
    """Follow a MigrateVm run this campaign did not start (or started in an earlier run) to its end."""

    workflow_id: str


@dataclass(frozen=True)
class WatchMoveResult:
    state: MoveState
    error: str = ""


@dataclass(frozen=True)
class CheckInput:
    """Preflight a part of a campaign (`snlm campaign check`, and a campaign's first step), read-only: each host
    pair's VMs in one batch per pair, so each host's reads are shared by its VMs."""

    pairs: tuple[PreflightBatchInput, ...]
    max_migrations_per_host: int | None = None


@dataclass(frozen=True)
class VmCheck:
    """One VM's preflight in a campaign check, compact: the blockers and warnings as sentences, the sizes the
    planner needs, and whether the move is already done."""

    vm: str
    source: str
    destination: str
    blockers: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    memory_bytes: int = 0
    disk_bytes: int = 0
    already_there: bool = False

    @property
    def ok(self) -> bool:
        return not self.blockers


@dataclass(frozen=True)
class CheckResult:
    """Every VM's check, in the order asked; each host's concurrent migrations as it reported them (its
    MaximumVirtualMachineMigrations, capped by the policy); the PSRP round trips the check cost."""

    vms: tuple[VmCheck, ...]
    host_slots: dict[str, int]
    round_trips: int = 0


# -- Surveys: what hosts hold, for generated plans (`snlm plan evacuate`, `snlm plan rebalance`) ---------------

SURVEY_WORKFLOW_PREFIX = "snlm-survey-"


@dataclass(frozen=True)
class SurveyedVm:
    """A VM as a survey reads it: what placement needs (memory, disks, switches) and whether it can move live."""

    name: str
    vm_id: str
    state: str
    memory_bytes: int
    disk_bytes: int
    switches: tuple[str, ...] = ()
    clustered: bool = False


@dataclass(frozen=True)
class HostSurvey:
    """A host's VMs and capacity: memory in all and free, its virtual switches, its concurrent migrations, and the
    free bytes of each drive (letter -> bytes)."""

    host: str
    vms: tuple[SurveyedVm, ...]
    memory_bytes: int
    free_memory_bytes: int
    switches: tuple[str, ...] = ()
    max_migrations: int = HYPERV_DEFAULT_MAX_MIGRATIONS
    free_disk_bytes: dict[str, int] | None = None
    vm_path: str = ""


@dataclass(frozen=True)
class SurveyInput:
    hosts: tuple[str, ...]


@dataclass(frozen=True)
class SurveyResult:
    hosts: tuple[HostSurvey, ...]


@dataclass(frozen=True)
class ForecastInput:
    """What the `forecast_campaign` local activity simulates: the moves left (packed), each one's state letter
    (pending or running), the waves of the moves left, the hosts and the scheduler; the planner's `rule`, or None
    to simulate each and keep the one the campaign should decide with (see scheduling.simulate); the hosts'
    live-migration `performance` option the transfer model follows (scheduling.transfer_model), or None for the
    model campaigns used before it did (scheduling.UNCALIBRATED_MODEL)."""

    moves: PackedMoves
    hosts: tuple[HostProfile, ...]
    scheduler: Scheduler
    seed: int = 0
    rule: int | None = None
    performance: MigrationPerformance | None = None
    setup_seconds: float | None = None  # CampaignPlan.setup_seconds


@dataclass(frozen=True)
class ForecastSummary:
    """A forecast without its per-move detail: the makespan, each wave's end (by index) and each host's last end,
    in seconds from when it was made, and the planner's rule it was made with (the one the campaign decides with;
    0, the first rule, in forecasts made before the planner had rules)."""

    makespan_seconds: float
    wave_ends: tuple[float, ...] = ()
    host_ends: dict[str, float] | None = None
    planner_rule: int = 0
