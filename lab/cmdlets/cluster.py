"""FailoverClusters cmdlets snlm uses to take a VM out of its cluster and put it back (hyperv-facts "Cluster HA").

Error texts for a missing group, a non-empty group and a failed Add-ClusterVirtualMachineRole are LAB-OWN
(catalogue 2.4 / 5.4: no public transcript); the stopped-service record is sourced.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from lab.cmdlets import errors, objects
from lab.cmdlets.base import Context, cmdlet
from lab.cmdlets.binder import CmdletInfo, Kind, Param
from lab.cmdlets.errors import FC_COMMANDS
from lab.cmdlets.psobj import FC, get_prop, has_wildcard, make_object, wildcard_match
from lab.commands import ErrorCategory
from lab.model.state import Cluster, ClusterGroup, ClusterGroupState

CLUSTER = Param("Cluster", Kind.STRING)


def fc(
    name: str, cmdlet_class: str, *params: Param, default_set: str | None = None, should_process: bool = False
) -> CmdletInfo:
    return CmdletInfo(
        name,
        f"{FC_COMMANDS}.{cmdlet_class}",
        (*params, CLUSTER),
        default_set=default_set,
        should_process=should_process,
    )


def _class(ctx: Context) -> str:
    return ctx.info.cmdlet_class.rsplit(".", 1)[-1]


def _cluster(ctx: Context) -> Cluster | None:
    """The cluster the command talks to: -Cluster, or the one this host belongs to."""
    name = ctx.bound.get("Cluster")
    with ctx.world.lock:
        cluster = ctx.world.clusters.get(str(name).split(".", 1)[0].upper()) if name else ctx.world.cluster_of(ctx.host)
    if cluster is None or not cluster.service_running:
        ctx.write_error(errors.cluster_service_not_running(_class(ctx), ctx.name))
        return None
    return cluster


def _group(ctx: Context, cluster: Cluster, name: str) -> ClusterGroup | None:
    group = cluster.groups.get(name.lower())
    if group is None:
        ctx.write_error(errors.cluster_group_not_found(_class(ctx), ctx.name, name))
    return group


def _group_name(value: Any) -> str:
    return str(get_prop(value, "Name") or value)


@cmdlet(fc("Get-Cluster", "GetClusterCommand", Param("Name", Kind.STRING, position=0), Param("Domain", Kind.STRING)))
def get_cluster(ctx: Context) -> Iterable[Any]:
    if ctx.bound.get("Name"):
        ctx.bound.values["Cluster"] = ctx.bound.get("Name")
    cluster = _cluster(ctx)
    if cluster is None:
        return []
    with ctx.world.lock:
        return [objects.cluster(cluster, ctx.world.domain)]


@cmdlet(
    fc(
        "Get-ClusterGroup",
        "GetClusterGroupCommand",
        Param("Name", Kind.STRINGS, position=0),
        Param("InputObject", Kind.ANYS, pipeline=True),
    )
)
def get_cluster_group(ctx: Context) -> Iterable[Any]:
    cluster = _cluster(ctx)
    if cluster is None:
        return []
    out: list[Any] = []
    with ctx.world.lock:
        names = ctx.bound.get("Name")
        if not names:
            return [objects.cluster_group(cluster, g, ctx.world.hosts) for g in cluster.groups.values()]
        for pattern in names:
            if has_wildcard(pattern):
                out.extend(
                    objects.cluster_group(cluster, g, ctx.world.hosts)
                    for g in cluster.groups.values()
                    if wildcard_match(pattern, g.name)
                )
                continue
            group = _group(ctx, cluster, pattern)
            if group is not None:
                out.append(objects.cluster_group(cluster, group, ctx.world.hosts))
    return out


@cmdlet(
    fc(
        "Get-ClusterOwnerNode",
        "GetOwnerNodesCommand",
        Param("Group", Kind.STRING, sets=("Group",)),
        Param("Resource", Kind.STRING, sets=("Resource",)),
        Param("InputObject", Kind.ANYS, pipeline=True),
        default_set="Group",
    )
)
def get_cluster_owner_node(ctx: Context) -> Iterable[Any]:
    cluster = _cluster(ctx)
    if cluster is None:
        return []
    with ctx.world.lock:
        if ctx.bound.get("Resource"):
            # The VM resource "Virtual Machine <vm>": its possible owners are every node (SA-LM).
            name = str(ctx.bound.get("Resource"))
            vm_name = name[len("Virtual Machine ") :] if name.lower().startswith("virtual machine ") else name
            if _group(ctx, cluster, vm_name) is None:
                return []
            resource = make_object(
                [f"{FC}.ClusterResource", "System.Object"], [("Name", name), ("OwnerGroup", vm_name)], [], name
            )
            owners = [objects.cluster_node(cluster, n, ctx.world.hosts) for n in cluster.nodes]
            return [objects.cluster_owner_node_list(resource, owners)]
        names = (
            [str(ctx.bound.get("Group"))]
            if ctx.bound.get("Group")
            else [_group_name(o) for o in ctx.bound.get("InputObject") or []]
        )
        out = []
        for name in names:
            group = _group(ctx, cluster, name)
            if group is None:
                continue
            owners = [objects.cluster_node(cluster, n, ctx.world.hosts) for n in group.preferred_owners]
            out.append(objects.cluster_owner_node_list(objects.cluster_group(cluster, group, ctx.world.hosts), owners))
        return out


@cmdlet(
    fc(
        "Set-ClusterOwnerNode",
        "SetOwnerNodesCommand",
        Param("Owners", Kind.STRINGS, position=0, mandatory=True),
        Param("Group", Kind.STRING, sets=("Group",)),
        Param("Resource", Kind.STRING, sets=("Resource",)),
        Param("InputObject", Kind.ANYS, pipeline=True),
        default_set="Group",
    )
)
def set_cluster_owner_node(ctx: Context) -> Iterable[Any]:
    cluster = _cluster(ctx)
    if cluster is None:
        return []
    owners = [str(o).upper() for o in ctx.bound.get("Owners")]
    unknown = [o for o in owners if o not in cluster.nodes]
    if unknown:
        # LAB-OWN text.
        ctx.write_error(
            errors.cluster_error(
                _class(ctx),
                ctx.name,
                "ClusterCmdletException",
                ErrorCategory.ObjectNotFound,
                f"The node '{unknown[0]}' is not a member of cluster '{cluster.name}'.",
                unknown[0],
            )
        )
        return []
    names = (
        [str(ctx.bound.get("Group"))]
        if ctx.bound.get("Group")
        else [_group_name(o) for o in ctx.bound.get("InputObject") or []]
    )
    with ctx.world.lock:
        for name in names:
            group = _group(ctx, cluster, name)
            if group is not None:
                group.preferred_owners = owners
    return []


@cmdlet(
    fc(
        "Remove-ClusterGroup",
        "RemoveClusterGroupCommand",
        Param("Name", Kind.STRINGS, position=0),
        Param("InputObject", Kind.ANYS, pipeline=True),
        Param("RemoveResources", Kind.SWITCH),
        Param("Force", Kind.SWITCH),
        Param("VMId", Kind.GUIDS),
        should_process=True,
    )
)
def remove_cluster_group(ctx: Context) -> Iterable[Any]:
    """Remove a VM role: the VM stays registered on its owner node, no longer clustered. The role is not taken
    offline first (an offline role would deregister the VM, hyperv-facts)."""
    cluster = _cluster(ctx)
    if cluster is None:
        return []
    names = ctx.bound.get("Name") or [_group_name(o) for o in ctx.bound.get("InputObject") or []]
    with ctx.world.lock:
        for name in names:
            group = _group(ctx, cluster, name)
            if group is None:
                continue
            if group.vm_id is not None and not ctx.bound.switch("RemoveResources"):
                # LAB-OWN text (catalogue 5.4).
                ctx.write_error(
                    errors.cluster_error(
                        _class(ctx),
                        ctx.name,
                        "ClusterCmdletException",
                        ErrorCategory.InvalidOperation,
                        f"The group '{group.name}' contains resources. Remove the resources first, or specify "
                        "-RemoveResources to remove them with the group.",
                        group.name,
                    )
                )
                continue
            if ctx.bound.switch("WhatIf"):
                continue
            del cluster.groups[group.name.lower()]
            for node in cluster.nodes:
                host = ctx.world.hosts.get(node)
                vm = host.vms.get(group.vm_id) if host and group.vm_id else None
                if vm is not None:
                    vm.is_clustered = False
    return []


@cmdlet(
    fc(
        "Add-ClusterVirtualMachineRole",
        "AddClusterVirtualMachineRoleCommand",
        Param("VMName", Kind.STRING, aliases=("VM",)),
        Param("VirtualMachine", Kind.STRING, position=0),
        Param("VMId", Kind.GUIDS),
        Param("Name", Kind.STRING),
        Param("IgnoreLocked", Kind.SWITCH),
        Param("Wait", Kind.INT32),
    )
)
def add_cluster_virtual_machine_role(ctx: Context) -> Iterable[Any]:
    cluster = _cluster(ctx)
    if cluster is None:
        return []
    vm_name = ctx.bound.get("VMName") or ctx.bound.get("VirtualMachine")
    vm_ids = ctx.bound.get("VMId") or []
    with ctx.world.lock:
        found = None
        for node in cluster.nodes:
            host = ctx.world.hosts.get(node)
            if host is None:
                continue
            for vm in host.realized_vms():
                if (vm_name and vm.name.lower() == str(vm_name).lower()) or vm.id in vm_ids:
                    found = (host, vm)
        if found is None:
            # LAB-OWN text.
            ctx.write_error(
                errors.cluster_error(
                    _class(ctx),
                    ctx.name,
                    "ClusterCmdletException",
                    ErrorCategory.ObjectNotFound,
                    f"There is no virtual machine named '{vm_name or vm_ids}' on any node of cluster '{cluster.name}'.",
                    str(vm_name or ""),
                )
            )
            return []
        host, vm = found
        group_name = ctx.bound.get("Name") or vm.name
        if group_name.lower() in cluster.groups:
            ctx.write_error(
                errors.cluster_error(
                    _class(ctx),
                    ctx.name,
                    "ClusterCmdletException",
                    ErrorCategory.ResourceExists,
                    f"The virtual machine '{vm.name}' is already a clustered role in cluster '{cluster.name}'.",
                    vm.name,
                )
            )
            return []
        group = ClusterGroup(
            name=group_name,
            vm_id=vm.id,
            owner_node=host.name,
            state=ClusterGroupState.Online if vm.state.name == "Running" else ClusterGroupState.Offline,
            id=uuid.uuid4(),
        )
        cluster.groups[group_name.lower()] = group
        vm.is_clustered = True
        return [objects.cluster_group(cluster, group, ctx.world.hosts)]
