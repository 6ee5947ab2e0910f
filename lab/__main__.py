"""`python -m lab` (or `snlm-lab`): start a lab of simulated Hyper-V hosts and run it until Ctrl-C.

It prints what it started (hosts, ports, authentication, where the inventory, CA, password and control
token are) and keeps running until SIGINT or SIGTERM, then stops everything and exits 0. A topology that
does not validate gets one error naming the file and the field, and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections import Counter
from pathlib import Path
from types import FrameType

from lab.lab import LAB_AUTH_MODES, Lab
from lab.model.ldap_directory import LdapDirectory, LdapDirectoryError
from lab.model.topology import TopologyError

DEFAULT_INVENTORY = Path(".snlm/lab/inventory.yaml")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lab",
        description="Start simulated Hyper-V hosts that speak WinRM/PSRP, from a topology file.",
    )
    parser.add_argument("--topology", type=Path, help="topology YAML (default: the built-in lab)")
    parser.add_argument(
        "--time-scale", type=float, help="simulated seconds per real second (default: the topology's, 60)"
    )
    parser.add_argument(
        "--inventory-out",
        type=Path,
        default=DEFAULT_INVENTORY,
        help=f"where to write the inventory; its folder holds the CA, secrets and token (default: {DEFAULT_INVENTORY})",
    )
    parser.add_argument("--scheme", choices=("http", "https"), default="http", help="listener the inventory names")
    parser.add_argument("--auth", choices=LAB_AUTH_MODES, default="ntlm", help="authentication the inventory names")
    parser.add_argument(
        "--control-port", type=int, default=0, help="control API port on 127.0.0.1 (default: any free port)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the hosts do")
    directory = parser.add_argument_group(
        "reading a real directory",
        "the hosts read their delegation entries from Active Directory instead of the topology's (read-only)",
    )
    directory.add_argument(
        "--directory-uri",
        action="append",
        metavar="URI",
        help="ldaps://dc[:port] or ldap://dc[:port] (StartTLS); repeat for failover",
    )
    directory.add_argument("--directory-user", help="bind account (UPN or DN); a domain user can read delegation")
    directory.add_argument(
        "--directory-password-env", metavar="VAR", help="environment variable holding the bind password"
    )
    directory.add_argument(
        "--directory-ca-file", type=Path, help="CA bundle of the DCs' certificates (default: system trust store)"
    )
    directory.add_argument(
        "--directory-tls-name",
        action="append",
        metavar="NAME",
        help="a name the DC certificate may carry besides the URI's host (e.g. when the URI is an address)",
    )
    directory.add_argument(
        "--directory-base-dn", help="where computer accounts are searched (default: the DC's naming context)"
    )
    return parser


def _directory(args: argparse.Namespace) -> LdapDirectory | None:
    """The LdapDirectory the options describe (None without --directory-uri); ValueError saying what is wrong."""
    if not args.directory_uri:
        if args.directory_user or args.directory_password_env or args.directory_ca_file:
            raise ValueError("--directory-uri is required with the other --directory-* options")
        return None
    if not args.directory_user or not args.directory_password_env:
        raise ValueError("--directory-uri needs --directory-user and --directory-password-env")
    password = os.environ.get(args.directory_password_env)
    if not password:
        raise ValueError(f"--directory-password-env: the environment variable {args.directory_password_env} is not set")
    return LdapDirectory(
        args.directory_uri,
        bind_user=args.directory_user,
        bind_password=password,
        ca_file=args.directory_ca_file,
        base_dn=args.directory_base_dn,
        tls_server_names=args.directory_tls_name or (),
    )


def _summary(lab: Lab) -> str:
    world = lab.world
    vms = Counter(h.name for h in world.hosts.values() for vm in h.vms.values() if not vm.planned)
    rows = [("HOST", "CLUSTER", "OS", "CPU", "HTTP", "HTTPS", "AUTH", "VMS")]
    inventory = lab.inventory()
    for name, host in world.hosts.items():
        endpoint = lab.endpoint(name)
        rows.append(
            (
                name,
                host.cluster or "-",
                host.os.value,
                "AMD" if host.cpu.manufacturer == "AuthenticAMD" else "Intel",
                str(endpoint.http_port),
                str(endpoint.https_port),
                inventory.hosts[name].auth,
                str(vms[name]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    table = "\n".join(
        ("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))).rstrip() for row in rows
    )
    problems = lab.documented_problems()
    lines = [
        f"snlm lab: {len(world.hosts)} simulated Hyper-V hosts from {lab.topology_path}, "
        f"time x{world.clock.time_scale:g}, listening on 127.0.0.1",
        table,
        f"  {sum(vms.values())} VMs, {len(world.clusters)} clusters, {len(problems)} deliberate problems documented "
        "in the topology (PROBLEM[...] comments)",
        "",
        f"  inventory      {lab.inventory_path}  (scheme {lab.scheme}; the engine reads this)",
        f"  credentials    {lab.username}, password in {lab.password_file} (mode 0600)",
        f"  CA certificate {lab.ca_file}",
    ]
    if lab.control_url:
        lines.append(f"  control API    {lab.control_url}  (bearer token in {lab.control_token_file})")
    if isinstance(lab.world.directory, LdapDirectory):
        directory = lab.world.directory
        lines.append(
            f"  directory      {', '.join(directory.uris)} as {directory.bind_user} under {directory.base_dn} "
            "(delegation read from it; a host sees a change after klist purge -li 0x3e7 or 15 simulated minutes)"
        )
    lines += ["", "Ctrl-C stops the lab."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.time_scale is not None and args.time_scale <= 0:
        print(f"--time-scale: must be positive, got {args.time_scale}", file=sys.stderr)
        return 2
    inventory_out: Path = args.inventory_out.resolve()
    try:
        directory = _directory(args)
        if directory is not None:
            directory.check()  # a wrong URI, CA or password is said now, not as failed moves later
    except (ValueError, LdapDirectoryError) as exc:
        print(f"error: directory: {exc}", file=sys.stderr)
        return 2
    try:
        lab = Lab.from_topology(
            args.topology,
            workdir=inventory_out.parent,
            time_scale=args.time_scale,
            auth=args.auth,
            scheme=args.scheme,
            inventory_path=inventory_out,
            control_port=args.control_port,
            directory=directory,
        )
    except TopologyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Handlers before start: a signal during start-up still ends in a clean stop.
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        lab.start()
    except OSError as exc:
        print(f"error: cannot start the lab: {exc}", file=sys.stderr)
        return 1
    try:
        print(_summary(lab), flush=True)
        # Event.wait with a timeout keeps the main thread responsive to signals on every platform.
        while not stop.wait(0.5):
            pass
        print("stopping the lab ...", flush=True)
    finally:
        lab.stop()
    print("lab stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
