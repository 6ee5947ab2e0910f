"""Storage and file-system cmdlets: Get-Volume, Test-Path, Remove-Item over the files the lab tracks.

The lab knows the VM files and ISOs it placed on each volume; a folder exists when it holds one of them (or
it is a volume root or one of the host's default Hyper-V folders).
"""

from __future__ import annotations

import ntpath
from collections.abc import Iterable
from typing import Any

from lab.cmdlets import errors, objects
from lab.cmdlets.base import Context, cmdlet
from lab.cmdlets.binder import CmdletInfo, Kind, Param
from lab.cmdlets.network import cdxml, not_found
from lab.commands import ErrorCategory, ErrorSpec
from lab.model.state import Host, norm_path


@cmdlet(
    cdxml(
        "Get-Volume",
        Param("DriveLetter", Kind.STRINGS, position=0, sets=("ByDriveLetter",)),
        Param("FileSystemLabel", Kind.STRINGS, sets=("ByLabel",)),
        Param("Path", Kind.STRINGS, sets=("ByPaths",)),
        default_set="ByDriveLetter",
    )
)
def get_volume(ctx: Context) -> Iterable[Any]:
    host = ctx.host
    out: list[Any] = []
    with ctx.world.lock:
        if ctx.bound.has("DriveLetter"):
            for letter in ctx.bound.get("DriveLetter"):
                drive = str(letter).rstrip(":\\").upper()
                if drive in host.volumes:
                    out.append(objects.volume(host, drive))
                else:
                    not_found(ctx, "MSFT_Volume", "DriveLetter", str(letter))
        elif ctx.bound.has("FileSystemLabel"):
            for label in ctx.bound.get("FileSystemLabel"):
                matched = [d for d, v in sorted(host.volumes.items()) if v.label.lower() == str(label).lower()]
                if not matched:
                    not_found(ctx, "MSFT_Volume", "FileSystemLabel", str(label))
                out.extend(objects.volume(host, d) for d in matched)
        else:
            out.extend(objects.volume(host, d) for d in sorted(host.volumes))
    return out


def folder_exists(host: Host, path: str) -> bool:
    normalized = norm_path(path).rstrip("\\")
    if len(normalized) == 2 and normalized[1] == ":":
        return normalized[0].upper() in host.volumes
    if host.has_folder(path):
        return True
    for default in (host.virtual_machine_path, host.virtual_hard_disk_path):
        base = norm_path(default).rstrip("\\")
        if base == normalized or base.startswith(normalized + "\\"):
            return True
    return False


@cmdlet(
    CmdletInfo(
        "Test-Path",
        "Microsoft.PowerShell.Commands.TestPathCommand",
        (
            Param("Path", Kind.STRINGS, position=0, mandatory=True, sets=("Path",), pipeline=True),
            Param("LiteralPath", Kind.STRINGS, mandatory=True, sets=("LiteralPath",), aliases=("PSPath",)),
            Param("PathType", Kind.STRING, aliases=("Type",)),
            Param("IsValid", Kind.SWITCH),
            Param("Filter", Kind.STRING),
            Param("Include", Kind.STRINGS),
            Param("Exclude", Kind.STRINGS),
            Param("Credential", Kind.ANY),
        ),
        default_set="Path",
    )
)
def test_path(ctx: Context) -> Iterable[Any]:
    host = ctx.host
    paths = ctx.bound.get("Path") or ctx.bound.get("LiteralPath") or []
    kind = str(ctx.bound.get("PathType") or "Any").lower()
    out: list[Any] = []
    with ctx.world.lock:
        for path in paths:
            if not path:
                out.append(False)
                continue
            if ctx.bound.switch("IsValid"):
                out.append(ntpath.splitdrive(path)[0] != "" or not ntpath.isabs(path))
                continue
            is_file = host.has_file(path)
            is_folder = not is_file and folder_exists(host, path)
            if kind == "leaf":
                out.append(is_file)
            elif kind == "container":
                out.append(is_folder)
            else:
                out.append(is_file or is_folder)
    return out


REMOVE_ITEM_CLASS = "Microsoft.PowerShell.Commands.RemoveItemCommand"


@cmdlet(
    CmdletInfo(
        "Remove-Item",
        REMOVE_ITEM_CLASS,
        (
            Param("Path", Kind.STRINGS, position=0, mandatory=True, sets=("Path",), pipeline=True),
            Param("LiteralPath", Kind.STRINGS, mandatory=True, sets=("LiteralPath",), aliases=("PSPath",)),
            Param("Recurse", Kind.SWITCH),
            Param("Force", Kind.SWITCH),
            Param("Filter", Kind.STRING),
            Param("Include", Kind.STRINGS),
            Param("Exclude", Kind.STRINGS),
            Param("Credential", Kind.ANY),
            Param("Stream", Kind.STRINGS),
        ),
        default_set="Path",
        should_process=True,
    )
)
def remove_item(ctx: Context) -> Iterable[Any]:
    host = ctx.host
    paths = ctx.bound.get("Path") or ctx.bound.get("LiteralPath") or []
    for path in paths:
        with ctx.world.lock:
            in_use = _in_use(host)
            key = norm_path(path)
            if host.has_file(path):
                victims = [key]
            elif folder_exists(host, path) and len(key.rstrip("\\")) > 2:
                prefix = key.rstrip("\\") + "\\"
                victims = [k for k in host.files if k.startswith(prefix)]
                if victims and not ctx.bound.switch("Recurse"):
                    ctx.write_error(_has_children(ctx, path))
                    continue
            else:
                ctx.write_error(_path_not_found(ctx, path))
                continue
            busy = [host.files[k].path for k in victims if k in in_use]
            for item in busy:
                ctx.write_error(_in_use_error(ctx, item))
            if ctx.bound.switch("WhatIf"):
                continue
            for k in victims:
                if k not in in_use:
                    host.files.pop(k, None)
    return []


def _in_use(host: Host) -> set[str]:
    """Files a registered, realized VM holds open (its configuration and VHDs)."""
    held: set[str] = set()
    for vm in host.vms.values():
        if vm.planned:
            continue
        held.update(norm_path(p) for p in vm.state_files)
        held.update(norm_path(p) for p in vm.vhd_paths())
        held.update(norm_path(d.path) for d in vm.dvd_drives if d.path)
    return held


def _path_not_found(ctx: Context, path: str) -> ErrorSpec:
    return ErrorSpec(
        message=f"Cannot find path '{path}' because it does not exist.",
        fully_qualified_error_id=f"PathNotFound,{REMOVE_ITEM_CLASS}",
        category=ErrorCategory.ObjectNotFound,
        activity=ctx.name,
        exception_types=errors.ITEM_NOT_FOUND_EXCEPTION,
        hresult=errors.HRESULT_RUNTIME,
        target_name=path,
        target_type="String",
        target_object=path,
    )


def _in_use_error(ctx: Context, path: str) -> ErrorSpec:
    return ErrorSpec(
        message=f"Cannot remove item {path}: The process cannot access the file '{path}' because it is being used "
        "by another process.",
        fully_qualified_error_id=f"RemoveFileSystemItemIOError,{REMOVE_ITEM_CLASS}",
        category=ErrorCategory.WriteError,
        activity=ctx.name,
        exception_types=errors.IO_EXCEPTION,
        hresult=-2147024864,  # 0x80070020 ERROR_SHARING_VIOLATION
        target_name=path,
        target_type="FileInfo",
        target_object=path,
    )


def _has_children(ctx: Context, path: str) -> ErrorSpec:
    # LAB-OWN composition: without -Recurse PowerShell asks for confirmation, which a remote pipeline with no
    # host cannot answer; the lab reports the prompt's text as the error.
    return ErrorSpec(
        message=f"The item at {path} has children and the Recurse parameter was not specified. If you continue, all "
        "children will be removed with the item. Are you sure you want to continue?",
        fully_qualified_error_id=f"RemoveItemNeedsRecurse,{REMOVE_ITEM_CLASS}",
        category=ErrorCategory.InvalidOperation,
        activity=ctx.name,
        exception_types=("System.Management.Automation.Host.HostException", *errors._RUNTIME),
        target_name=path,
        target_type="String",
        target_object=path,
    )
