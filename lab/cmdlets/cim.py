"""Get-CimInstance and Invoke-CimMethod over the classes snlm reads (catalogue 1.11; hyperv-facts "Watching").

Filters and queries are the simple equality forms (`Name='x' AND VirtualSystemName="GUID"`); string
comparisons ignore case, as WQL's do.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from psrpcore.types import PSObject

from lab.cmdlets import errors, objects
from lab.cmdlets.base import Context, cmdlet
from lab.cmdlets.binder import CmdletInfo, Kind, Param
from lab.cmdlets.psobj import get_prop, parse_wql_filter
from lab.commands import ErrorCategory, ErrorSpec

CIM_CMDLETS = "Microsoft.Management.Infrastructure.CimCmdlets"
CIM_INSTANCE = "Microsoft.Management.Infrastructure.CimInstance"
VIRT_NS = "root/virtualization/v2"


def _norm_ns(namespace: str) -> str:
    return namespace.replace("\\", "/").strip("/").lower()


def _migration_jobs(ctx: Context) -> list[PSObject]:
    jobs = ctx.jobs()
    now = ctx.world.clock.now()
    with ctx.world.lock:
        return [objects.migration_job(job, now) for job in jobs]


def _migration_service(ctx: Context) -> list[PSObject]:
    jobs = ctx.jobs()
    with ctx.world.lock:
        return [objects.migration_service(ctx.host, jobs)]


def _locked(build: Callable[[Context], list[PSObject]]) -> Callable[[Context], list[PSObject]]:
    def run(ctx: Context) -> list[PSObject]:
        with ctx.world.lock:
            return build(ctx)

    return run


# (namespace, class) → builder. Classes of other cmdlets (firewall, SMB, volumes) are listed too: CDXML
# cmdlets are CIM queries, so a client may ask for them either way.
CLASSES: dict[tuple[str, str], Callable[[Context], list[PSObject]]] = {
    ("root/cimv2", "win32_processor"): _locked(lambda ctx: objects.win32_processors(ctx.host)),
    ("root/cimv2", "win32_computersystem"): _locked(lambda ctx: [objects.win32_computer_system(ctx.host)]),
    ("root/cimv2", "win32_operatingsystem"): _locked(
        lambda ctx: [objects.win32_operating_system(ctx.host, ctx.world.clock.now())]
    ),
    (VIRT_NS, "msvm_migrationjob"): _migration_jobs,
    (VIRT_NS, "msvm_virtualsystemmigrationservice"): _migration_service,
    (VIRT_NS, "msvm_virtualsystemmigrationservicesettingdata"): _locked(
        lambda ctx: [objects.migration_service_setting_data(ctx.host)]
    ),
    ("root/standardcimv2", "msft_netfirewallrule"): _locked(
        lambda ctx: [objects.firewall_rule(r) for r in ctx.host.firewall_rules]
    ),
    ("root/microsoft/windows/smb", "msft_smbserverconfiguration"): _locked(
        lambda ctx: [objects.smb_server_configuration(ctx.host)]
    ),
    ("root/microsoft/windows/storage", "msft_volume"): _locked(
        lambda ctx: [objects.volume(ctx.host, d) for d in sorted(ctx.host.volumes)]
    ),
}
NAMESPACES = {ns for ns, _ in CLASSES}


def cim_error(
    cmdlet_name: str, cmdlet_class: str, hresult: int, message: str, target: str, category: ErrorCategory
) -> ErrorSpec:
    """A CimException record as the CimCmdlets write it: FQEID `HRESULT 0x8004xxxx,<class>` (recalled from real
    transcripts; not in the catalogue)."""
    return ErrorSpec(
        message=message,
        fully_qualified_error_id=f"HRESULT 0x{hresult:08x},{CIM_CMDLETS}.{cmdlet_class}",
        category=category,
        activity=cmdlet_name,
        exception_types=errors.CIM_EXCEPTION,
        hresult=hresult - 2**32,
        target_name=target,
        target_type="String",
        target_object=target,
    )


def _matches(obj: Any, terms: list[tuple[str, str]]) -> bool:
    for name, wanted in terms:
        value = get_prop(obj, name)
        if value is None or str(value).lower() != wanted.lower():
            return False
    return True


_QUERY = re.compile(r"^\s*select\s+\*\s+from\s+(\w+)(?:\s+where\s+(.+))?\s*$", re.IGNORECASE | re.DOTALL)


@cmdlet(
    CmdletInfo(
        "Get-CimInstance",
        f"{CIM_CMDLETS}.GetCimInstanceCommand",
        (
            Param(
                "ClassName",
                Kind.STRING,
                position=0,
                mandatory=True,
                sets=("ClassNameComputerSet",),
                not_null_or_empty=True,
            ),
            Param("Query", Kind.STRING, mandatory=True, sets=("QueryComputerSet",), not_null_or_empty=True),
            Param(
                "InputObject",
                Kind.OBJECT,
                type_name=CIM_INSTANCE,
                mandatory=True,
                sets=("CimInstanceComputerSet",),
                pipeline=True,
                aliases=("CimInstance",),
            ),
            Param("Namespace", Kind.STRING, sets=("ClassNameComputerSet", "QueryComputerSet")),
            Param("Filter", Kind.STRING, sets=("ClassNameComputerSet",)),
            Param("Property", Kind.STRINGS, aliases=("SelectProperties",), sets=("ClassNameComputerSet",)),
            Param("KeyOnly", Kind.SWITCH),
            Param("Shallow", Kind.SWITCH),
            Param("OperationTimeoutSec", Kind.UINT32, aliases=("OT",)),
            Param("ComputerName", Kind.STRINGS, aliases=("CN", "ServerName")),
            Param("CimSession", Kind.ANYS),
            Param("QueryDialect", Kind.STRING),
            Param("ResourceUri", Kind.STRING),
        ),
        default_set="ClassNameComputerSet",
    )
)
def get_cim_instance(ctx: Context) -> Iterable[Any]:
    b = ctx.bound
    namespace = _norm_ns(b.get("Namespace") or "root/cimv2")
    terms: list[tuple[str, str]] = []
    if b.has("InputObject"):
        obj = b.get("InputObject")
        class_name = next((t.split("/")[-1] for t in obj.PSObject.type_names if "#" in t), "")
        namespace = next(
            (_norm_ns(t.split("#", 1)[1].rsplit("/", 1)[0]) for t in obj.PSObject.type_names if "#" in t), namespace
        )
        key = get_prop(obj, "InstanceID")
        terms = [("InstanceID", str(key))] if key else []
    elif b.has("Query"):
        match = _QUERY.match(b.get("Query"))
        parsed = parse_wql_filter(match.group(2)) if match and match.group(2) else []
        if match is None or parsed is None:
            ctx.write_error(
                cim_error(
                    ctx.name,
                    "GetCimInstanceCommand",
                    0x80041017,
                    "Invalid query ",
                    b.get("Query"),
                    ErrorCategory.InvalidArgument,
                )
            )
            return []
        class_name, terms = match.group(1), parsed
    else:
        class_name = b.get("ClassName")
        if b.get("Filter"):
            parsed = parse_wql_filter(b.get("Filter"))
            if parsed is None:
                ctx.write_error(
                    cim_error(
                        ctx.name,
                        "GetCimInstanceCommand",
                        0x80041017,
                        "Invalid query ",
                        b.get("Filter"),
                        ErrorCategory.InvalidArgument,
                    )
                )
                return []
            terms = parsed
    target = f"{namespace.replace('/', chr(92))}:{class_name}"
    if namespace not in NAMESPACES:
        ctx.write_error(
            cim_error(
                ctx.name,
                "GetCimInstanceCommand",
                0x8004100E,
                "Invalid namespace ",
                target,
                ErrorCategory.ObjectNotFound,
            )
        )
        return []
    build = CLASSES.get((namespace, class_name.lower()))
    if build is None:
        ctx.write_error(
            cim_error(
                ctx.name, "GetCimInstanceCommand", 0x80041010, "Invalid class ", target, ErrorCategory.ObjectNotFound
            )
        )
        return []
    return [obj for obj in build(ctx) if _matches(obj, terms)]


@cmdlet(
    CmdletInfo(
        "Invoke-CimMethod",
        f"{CIM_CMDLETS}.InvokeCimMethodCommand",
        (
            Param(
                "InputObject",
                Kind.OBJECT,
                type_name=CIM_INSTANCE,
                position=0,
                mandatory=True,
                sets=("CimInstanceComputerSet",),
                pipeline=True,
                aliases=("CimInstance",),
            ),
            Param("ClassName", Kind.STRING, position=0, mandatory=True, sets=("ClassNameComputerSet",)),
            Param("Query", Kind.STRING, mandatory=True, sets=("QueryComputerSet",)),
            Param("MethodName", Kind.STRING, position=1, mandatory=True, aliases=("Name",), not_null_or_empty=True),
            Param("Arguments", Kind.HASHTABLE, position=2),
            Param("Namespace", Kind.STRING, sets=("ClassNameComputerSet", "QueryComputerSet")),
            Param("OperationTimeoutSec", Kind.UINT32, aliases=("OT",)),
            Param("ComputerName", Kind.STRINGS, aliases=("CN", "ServerName")),
            Param("CimSession", Kind.ANYS),
            Param("QueryDialect", Kind.STRING),
        ),
        default_set="ClassNameComputerSet",
        should_process=True,
    )
)
def invoke_cim_method(ctx: Context) -> Iterable[Any]:
    b = ctx.bound
    method = b.get("MethodName")
    arguments = b.get("Arguments") or {}
    instances: list[Any] = []
    if b.has("InputObject"):
        instances = [b.get("InputObject")]
    elif b.has("Query"):
        match = _QUERY.match(b.get("Query"))
        parsed = parse_wql_filter(match.group(2)) if match and match.group(2) else []
        build = CLASSES.get((_norm_ns(b.get("Namespace") or "root/cimv2"), match.group(1).lower())) if match else None
        if build is None or parsed is None:
            ctx.write_error(
                cim_error(
                    ctx.name,
                    "InvokeCimMethodCommand",
                    0x80041017,
                    "Invalid query ",
                    b.get("Query"),
                    ErrorCategory.InvalidArgument,
                )
            )
            return []
        instances = [obj for obj in build(ctx) if _matches(obj, parsed)]
    else:
        # Static methods: none of the classes the lab serves has one snlm calls.
        ctx.write_error(
            cim_error(
                ctx.name, "InvokeCimMethodCommand", 0x8004102E, "Invalid method ", method, ErrorCategory.MetadataError
            )
        )
        return []
    out: list[Any] = []
    for instance in instances:
        is_job = any(t.lower().endswith("/msvm_migrationjob") for t in instance.PSObject.type_names)
        if not is_job or method.lower() != "requeststatechange":
            # LAB: only Msvm_MigrationJob.RequestStateChange is modelled; text as WMI's WBEM_E_INVALID_METHOD.
            ctx.write_error(
                cim_error(
                    ctx.name,
                    "InvokeCimMethodCommand",
                    0x8004102E,
                    "Invalid method ",
                    method,
                    ErrorCategory.MetadataError,
                )
            )
            continue
        instance_id = str(get_prop(instance, "InstanceID") or "")
        if not any(job.instance_id.lower() == instance_id.lower() for job in ctx.jobs()):
            # The job is gone (listed five minutes after it ends): WBEM_E_NOT_FOUND.
            ctx.write_error(
                cim_error(
                    ctx.name,
                    "InvokeCimMethodCommand",
                    0x80041002,
                    "Not found ",
                    instance_id,
                    ErrorCategory.ObjectNotFound,
                )
            )
            continue
        requested = get_prop(arguments, "RequestedState")
        if requested is None:
            ctx.write_error(
                cim_error(
                    ctx.name,
                    "InvokeCimMethodCommand",
                    0x80041008,
                    "Invalid parameter ",
                    "RequestedState",
                    ErrorCategory.InvalidArgument,
                )
            )
            continue
        if b.switch("WhatIf"):
            continue
        rc = ctx.engine.request_state_change(ctx.host_name, instance_id, int(requested))
        out.append(objects.cim_method_result(rc))
    return out
