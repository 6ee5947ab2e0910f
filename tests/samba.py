"""A throwaway Samba AD domain controller on loopback, for tests and benchmarks that need a real directory.

`SambaDomain` provisions a domain in a directory of its own, seeds an operator account that may write the
computer objects but lacks SeEnableDelegationPrivilege, starts `samba` on 127.0.0.1 and stops it by its pid.
Provisioning follows Samba's own documented `samba-tool domain provision` for an AD DC, trimmed to the
LDAP and KDC services and bound to 127.0.0.1.

Samba's LDAP ports (389/636) cannot be moved, so one domain runs per machine at a time. The domain lives in a
fixed directory under the system's temporary directory, guarded by an advisory lock: a second test session
waits for the first (bounded), and a samba left running by a crashed session is stopped only when its pid file
is in that directory and its command line names that directory's smb.conf. No other process is ever signalled.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
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


class SambaUnavailable(RuntimeError):
    """Samba cannot run here (not installed, not root, or the LDAP ports are taken); the message says why."""


def unavailable_reason() -> str | None:
    """Why a Samba domain cannot be provisioned on this machine, or None when it can."""
    missing = [tool for tool in ("samba", "samba-tool", "samba_spnupdate") if shutil.which(tool) is None]
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
        admin_password: the Administrator's password.
        operator_password: the password of `operator`, who has write access to the computers but not the
            delegation privilege.
    """

    def __init__(
        self,
        root: Path,
        *,
        realm: str = "LAB.TEST",
        domain: str = "LAB",
        host_name: str = "DC1",
        admin_password: str = "Adm1n-Secret-Pa55!",
        operator_password: str = "0perator-Secret-Pa55!",
    ) -> None:
        self.root = root
        self.realm = realm.upper()
        self.dns_domain = realm.lower()
        self.domain = domain
        self.host_name = host_name
        self.admin_password = admin_password
        self.operator_password = operator_password
        self.base_dn = ",".join(f"DC={part}" for part in self.dns_domain.split("."))
        self._process: subprocess.Popen[bytes] | None = None
        self._lock_file: IO[str] | None = None

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
        """Take the machine-wide lock on this domain's directory, waiting (bounded) for another session."""
        self.root.mkdir(parents=True, exist_ok=True)
        lock = (self.root / "lock").open("w")
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    lock.close()
                    raise SambaUnavailable(
                        f"another test session holds {self.root / 'lock'} (and Samba's ports) for more than {timeout}s"
                    ) from None
                time.sleep(0.5)
        self._lock_file = lock
        self._stop_stale()

    def release(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

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
        """Start samba and wait until an LDAPS bind answers; fail fast if the process dies."""
        if self.is_running():
            return
        log = (self.root / "dc" / "log" / "samba.stdout").open("ab")
        env = {**os.environ, "KRB5_CONFIG": str(self.root / "dc" / "private" / "krb5.conf")}
        self._process = subprocess.Popen(
            ["samba", "-i", "-M", "single", "-s", str(self.smb_conf)],
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
    ) -> str:
        """Create a computer account `name` (as a domain join would) and return its DN."""
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
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        if done.returncode != 0:
            # Provisioning output can echo the command line, which holds the passwords: show the command name only.
            tail = (
                (done.stderr or done.stdout).replace(self.admin_password, "***").replace(self.operator_password, "***")
            )
            raise SambaUnavailable(
                f"{argv[0]} {argv[1] if len(argv) > 1 else ''} failed ({done.returncode}): {tail[-2000:]}"
            )
        return done.stdout


def _single(value: Any) -> Any:
    """One value of an attribute: ldap3 without the schema returns every attribute as a list."""
    return value[0] if isinstance(value, list) else value


def default_root() -> Path:
    """The fixed, per-user home of the test domain (so a crashed session's samba can be recognised)."""
    return Path(tempfile.gettempdir()) / f"snlm-samba-{os.getuid()}"
