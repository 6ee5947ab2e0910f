"""A throwaway Samba AD domain controller on loopback: a real directory for rehearsals, the demo and the tests.

    domain = SambaDomain(Path(".snlm/demo/samba"))
    domain.acquire(timeout=30)          # this machine's Samba ports, and the work dir, are ours
    domain.provision()                  # a fresh domain LAB.TEST (about 4 s)
    domain.start()                      # samba on 127.0.0.1, until an LDAPS bind answers
    domain.add_computer("HV-S2")        # a computer account, as a domain join leaves it
    ...
    domain.stop(); domain.release()

`SambaDomain` provisions a domain in a work directory of its own (Samba's own documented
`samba-tool domain provision` for an AD DC, trimmed to the LDAP and KDC services and bound to 127.0.0.1), seeds
an `operator` account that may read and write the computer objects but lacks SeEnableDelegationPrivilege (what a
lab or a help desk is given), starts `samba` and stops it by its pid. The Administrator's and the operator's
passwords are generated per instance unless given; they are attributes, never printed or logged.

Samba's LDAP ports (389/636) cannot be moved, so one domain runs per machine at a time: `acquire()` takes an
advisory lock on the work directory and one on the ports (a file in the system's temporary directory), waiting
(bounded) for another session, and `start()` refuses when something else already listens there. A samba left
running by a crashed session is stopped only when its pid file is in this work directory and its standard output
goes to this directory's log. No other process is ever signalled.

Nothing here imports the engine (activities/, workflows/): the lab reads this directory through
lab.model.ldap_directory.LdapDirectory, the engine writes it with its own client.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import ldap3
from ldap3.utils.dn import escape_rdn

WORKSTATION_TRUST_ACCOUNT = 0x1000


LDAP_PORTS = (389, 636)


class SambaUnavailable(RuntimeError):
    """Samba cannot run here (not installed, not root, or the LDAP ports are taken); the message says why."""


def generate_password() -> str:
    """A random password that meets AD's default complexity rules (upper, lower, digit, symbol; 20+ chars).

    It starts with a letter: samba-tool takes the password as a positional argument, and one that began with
    `-` (one in 64 of URL-safe tokens) was read as an option and failed the domain's provisioning.
    """
    return f"Aa1-{secrets.token_urlsafe(18)}"


def ports_lock_path() -> Path:
    """The machine-wide lock on Samba's LDAP ports, shared by every SambaDomain whatever its work dir."""
    return Path(tempfile.gettempdir()) / "snlm-samba-ports.lock"


def ports_in_use(host: str = "127.0.0.1") -> list[int]:
    """Which of the LDAP ports something already listens on (another samba, slapd, a test session's DC)."""
    taken = []
    for port in LDAP_PORTS:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            if probe.connect_ex((host, port)) == 0:
                taken.append(port)
    return taken


def unavailable_reason() -> str | None:
    """Why a Samba domain cannot be provisioned on this machine, or None when it can."""
    missing = [tool for tool in ("samba", "samba-tool", "samba_spnupdate") if _which(tool) is None]
    if missing:
        return (
            f"Samba is not installed ({', '.join(missing)} not found); install the Debian packages listed in "
            "scripts/system-deps.sh (make system-deps does it as root)"
        )
    if os.geteuid() != 0:
        return "provisioning a Samba AD domain and binding its LDAP ports 389/636 need root"
    return None


class SambaDomain:
    """One Samba AD DC: provision, start, stop, restart, and seed accounts.

    Args:
        root: the directory that holds the domain (smb.conf, databases, TLS files, pid file, logs).
        realm: the Kerberos realm, also the DNS domain (lower-cased).
        admin_password: the Administrator's password (generated when not given).
        operator_password: the password of `operator`, who has write access to the computers but not the
            delegation privilege (generated when not given).
    """

    def __init__(
        self,
        root: Path,
        *,
        realm: str = "LAB.TEST",
        domain: str = "LAB",
        host_name: str = "DC1",
        admin_password: str | None = None,
        operator_password: str | None = None,
    ) -> None:
        self.root = root
        self.realm = realm.upper()
        self.dns_domain = realm.lower()
        self.domain = domain
        self.host_name = host_name
        self.admin_password = admin_password or generate_password()
        self.operator_password = operator_password or generate_password()
        self.base_dn = ",".join(f"DC={part}" for part in self.dns_domain.split("."))
        self._process: subprocess.Popen[bytes] | None = None
        self._locks: list[IO[str]] = []

    def __repr__(self) -> str:  # no passwords
        state = f"running, pid {self.pid}" if self.is_running() else "stopped"
        return f"SambaDomain({self.realm}, root={self.root}, {state})"

    # -- where things are -------------------------------------------------------------------------------
    @property
    def smb_conf(self) -> Path:
        return self.root / "dc" / "etc" / "smb.conf"

    @property
    def sam_ldb(self) -> Path:
        return self.root / "dc" / "private" / "sam.ldb"

    @property
    def ca_file(self) -> Path:
        """The CA that signed the DC's self-signed LDAPS certificate."""
        return self.root / "dc" / "private" / "tls" / "ca.pem"

    @property
    def pid_file(self) -> Path:
        return self.root / "dc" / "run" / "samba.pid"

    @property
    def log_file(self) -> Path:
        return self.root / "dc" / "log" / "samba.log"

    @property
    def dc_fqdn(self) -> str:
        """The name on the DC's certificate."""
        return f"{self.host_name}.{self.dns_domain}"

    @property
    def ldaps_uri(self) -> str:
        return "ldaps://127.0.0.1:636"

    @property
    def ldap_uri(self) -> str:
        return "ldap://127.0.0.1:389"

    @property
    def admin_user(self) -> str:
        return f"Administrator@{self.dns_domain}"

    @property
    def operator_user(self) -> str:
        return f"operator@{self.dns_domain}"

    @property
    def computers_dn(self) -> str:
        return f"CN=Computers,{self.base_dn}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- lifecycle ---------------------------------------------------------------------------------------
    def acquire(self, timeout: float = 120.0) -> None:
        """Take the locks on this domain's directory and on Samba's ports, waiting (bounded) for another session.

        Raises SambaUnavailable when another session (a test run, a demo) still holds one after `timeout`.
        """
        if self._locks:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        try:
            for path, what in ((self.root / "lock", "this domain's directory"), (ports_lock_path(), "Samba's ports")):
                self._locks.append(
                    _lock(path, deadline, f"another session holds {what} ({path}) for more than {timeout:g}s")
                )
        except BaseException:
            self.release()
            raise
        self._stop_stale()

    def release(self) -> None:
        locks, self._locks = self._locks, []
        for lock in reversed(locks):
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()

    def _stop_stale(self) -> None:
        """Stop a samba that an earlier, crashed session of ours left running (its pid file is ours)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        # samba rewrites its command line and environment ("samba: root process"), so recognise ours by the
        # executable and by its standard output, which start() points at this domain's log directory.
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
            stdout = os.readlink(f"/proc/{pid}/fd/1")
        except OSError:
            return  # not running any more (or not ours to inspect)
        if not exe.endswith("/samba") or not stdout.startswith(str(self.root / "dc" / "log") + "/"):
            return  # the pid was reused by a process that is not ours: leave it alone
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)

    def provision(self) -> None:
        """Provision a fresh domain (about 4 s) and seed the operator account and its rights."""
        reason = unavailable_reason()
        if reason:
            raise SambaUnavailable(reason)
        dc = self.root / "dc"
        if dc.exists():
            shutil.rmtree(dc)
        for sub in ("run", "log"):
            (dc / sub).mkdir(parents=True)
        options = {
            "interfaces": "lo",
            "bind interfaces only": "yes",
            "server services": "ldap kdc",
            "pid directory": str(dc / "run"),
            "lock directory": str(dc / "run"),
            "log file": str(self.log_file),
            "ldap server require strong auth": "allow_sasl_over_tls",
        }
        self._run(
            "samba-tool",
            "domain",
            "provision",
            f"--targetdir={dc}",
            f"--realm={self.realm}",
            f"--domain={self.domain}",
            "--server-role=dc",
            "--dns-backend=NONE",
            f"--adminpass={self.admin_password}",
            f"--host-name={self.host_name}",
            "--host-ip=127.0.0.1",
            *(f"--option={key} = {value}" for key, value in options.items()),
            "--quiet",
            timeout=120,
        )
        local = ("-H", str(self.sam_ldb), "-s", str(self.smb_conf))
        self._run("samba_spnupdate", "-s", str(self.smb_conf), timeout=60)
        self._run("samba-tool", "user", "setexpiry", "Administrator", "--noexpiry", *local)
        self._run("samba-tool", "user", "create", "operator", self.operator_password, *local)
        self._run("samba-tool", "user", "setexpiry", "operator", "--noexpiry", *local)
        sid = self._run("samba-tool", "user", "show", "operator", "--attributes=objectSid", *local)
        operator_sid = next(line.split(":", 1)[1].strip() for line in sid.splitlines() if line.startswith("objectSid"))
        # Read, write, create and delete on CN=Computers and (CI: container inherit) every computer in it:
        # the rights a delegated help-desk account has, without SeEnableDelegationPrivilege.
        self._run(
            "samba-tool",
            "dsacl",
            "set",
            f"--objectdn={self.computers_dn}",
            f"--sddl=(A;CI;RPWPCCDCLCSWRCWDWO;;;{operator_sid})",
            *local,
        )

    def start(self, timeout: float = 60.0) -> None:
        """Start samba and wait until an LDAPS bind answers; fail fast if the process dies or the ports are taken."""
        if self.is_running():
            return
        taken = ports_in_use()
        if taken:
            raise SambaUnavailable(
                f"something already listens on 127.0.0.1:{'/'.join(map(str, taken))} (another Samba or LDAP server, "
                "perhaps a test session's domain): one Samba domain per machine"
            )
        log = (self.root / "dc" / "log" / "samba.stdout").open("ab")
        env = {**os.environ, "KRB5_CONFIG": str(self.root / "dc" / "private" / "krb5.conf")}
        self._process = subprocess.Popen(
            [_executable("samba"), "-i", "-M", "single", "-s", str(self.smb_conf)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
        log.close()
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            code = self._process.poll()
            if code is not None:
                self._process = None
                raise SambaUnavailable(
                    f"samba exited with {code} while starting (port 636 taken?); see {self.log_file}"
                )
            try:
                with self.admin_connection():
                    return
            except ldap3.core.exceptions.LDAPException as exc:
                last_error = exc
                time.sleep(0.2)
        self.stop()
        raise SambaUnavailable(f"no LDAPS bind within {timeout}s ({last_error}); see {self.log_file}")

    def stop(self, timeout: float = 20.0) -> None:
        """Stop samba by its pid: SIGTERM, then SIGKILL after `timeout`."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    # -- data --------------------------------------------------------------------------------------------
    def tls(self) -> ldap3.Tls:
        return ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(self.ca_file), valid_names=[self.dc_fqdn])

    @contextlib.contextmanager
    def admin_connection(self) -> Iterator[ldap3.Connection]:
        """An Administrator connection over validated LDAPS, for seeding and for checking what is stored."""
        server = ldap3.Server(self.ldaps_uri, use_ssl=True, tls=self.tls(), get_info=ldap3.NONE, connect_timeout=5)
        conn = ldap3.Connection(
            server, self.admin_user, self.admin_password, receive_timeout=10, raise_exceptions=True, auto_bind=True
        )
        try:
            yield conn
        finally:
            conn.unbind()

    def add_computer(
        self,
        name: str,
        *,
        user_account_control: int = WORKSTATION_TRUST_ACCOUNT,
        allowed_to_delegate_to: list[str] | None = None,
        operating_system_version: str | None = None,
    ) -> str:
        """Create a computer account `name` (as a domain join would) and return its DN.

        `operating_system_version` is what a joined Windows computer records about itself (e.g. "10.0 (20348)"
        for Server 2022), which delegation's automatic mode reads.
        """
        fqdn = f"{name}.{self.dns_domain}".lower()
        dn = f"CN={escape_rdn(name)},{self.computers_dn}"
        attributes: dict[str, Any] = {
            "sAMAccountName": f"{name.upper()}$",
            "dNSHostName": fqdn,
            "servicePrincipalName": [f"HOST/{name.upper()}", f"HOST/{fqdn}"],
            "userAccountControl": str(user_account_control),
        }
        if allowed_to_delegate_to:
            attributes["msDS-AllowedToDelegateTo"] = allowed_to_delegate_to
        if operating_system_version:
            attributes["operatingSystemVersion"] = operating_system_version
        with self.admin_connection() as conn:
            conn.add(dn, ["top", "person", "organizationalPerson", "user", "computer"], attributes)
        return dn

    def read(self, name: str) -> dict[str, Any]:
        """The stored delegation attributes of computer `name`, read as Administrator (the test's ground truth)."""
        dn = f"CN={escape_rdn(name)},{self.computers_dn}"
        with self.admin_connection() as conn:
            conn.search(
                dn, "(objectClass=computer)", ldap3.BASE, attributes=["msDS-AllowedToDelegateTo", "userAccountControl"]
            )
            entry = conn.response[0]["attributes"]
        return {
            "msDS-AllowedToDelegateTo": sorted(entry.get("msDS-AllowedToDelegateTo") or []),
            "userAccountControl": int(_single(entry["userAccountControl"])),
        }

    def modify(self, name: str, changes: dict[str, Any]) -> None:
        """Change computer `name` as Administrator (for seeding foreign values and odd flags)."""
        dn = f"CN={escape_rdn(name)},{self.computers_dn}"
        with self.admin_connection() as conn:
            conn.modify(dn, changes)

    def delete_computer(self, name: str) -> None:
        with self.admin_connection() as conn:
            conn.delete(f"CN={escape_rdn(name)},{self.computers_dn}")

    def _run(self, *argv: str, timeout: float = 30) -> str:
        env = {**os.environ, "KRB5_CONFIG": str(self.root / "dc" / "private" / "krb5.conf")}
        command = [_executable(argv[0]), *argv[1:]]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        if done.returncode != 0:
            # Provisioning output can echo the command line, which holds the passwords: show the command name only.
            tail = (
                (done.stderr or done.stdout).replace(self.admin_password, "***").replace(self.operator_password, "***")
            )
            raise SambaUnavailable(
                f"{argv[0]} {argv[1] if len(argv) > 1 else ''} failed ({done.returncode}): {tail[-2000:]}"
            )
        return done.stdout


def _which(name: str) -> str | None:
    """The full path of a Samba tool: PATH, then the Debian locations a user's PATH may lack (/usr/sbin)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")


def _executable(name: str) -> str:
    found = _which(name)
    if found is None:
        raise SambaUnavailable(f"{name} not found: install Samba (scripts/system-deps.sh)")
    return found


def _lock(path: Path, deadline: float, message: str) -> IO[str]:
    """An exclusive advisory lock on `path`, retried until `deadline` (time.monotonic()), then SambaUnavailable."""
    handle = path.open("a")
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() >= deadline:
                handle.close()
                raise SambaUnavailable(message) from None
            time.sleep(0.5)


def _single(value: Any) -> Any:
    """One value of an attribute: ldap3 without the schema returns every attribute as a list."""
    return value[0] if isinstance(value, list) else value


def default_root() -> Path:
    """The fixed, per-user home of the test domain (so a crashed session's samba can be recognised)."""
    return Path(tempfile.gettempdir()) / f"snlm-samba-{os.getuid()}"
