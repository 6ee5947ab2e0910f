"""Time to ensure and to revert Kerberos constrained delegation, against a throwaway Samba AD DC on loopback.

    sudo .venv/bin/python -m benchmarks.directory_bench [--pairs 50] [--repeat 5]

Provisions a domain (root and the Debian Samba packages needed, see scripts/system-deps.sh), creates the computer
accounts, and prints, for one pair and for `--pairs` disjoint pairs:
- "activity": a new connection per pair (connect, TLS, bind, two lookups, two modifies), as one activity call does;
- "one connection": every pair through a single bound client, the directory work alone.
Figures are wall-clock seconds on this machine; the DC is local, so a real network adds its round trips.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from activities.directory import DirectoryClient, DirectorySettings, SecretRef
from tests.samba import SambaDomain, default_root, unavailable_reason
from workflows.contracts import (
    DelegationHost,
    DelegationMode,
    EnsureDelegationInput,
    EnsureDelegationResult,
    RevertDelegationResult,
)


def _settings(domain: SambaDomain, secret: Path) -> DirectorySettings:
    return DirectorySettings(
        uris=[domain.ldaps_uri],
        base_dn=domain.base_dn,
        bind_user=domain.admin_user,
        bind_password=SecretRef(file=secret),
        ca_file=domain.ca_file,
        tls_server_names=[domain.dc_fqdn],
        mode=DelegationMode.ANY_PROTOCOL,
    )


def _timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def run(pairs: int, repeat: int) -> None:
    domain = SambaDomain(default_root())
    domain.acquire()
    try:
        t0 = time.perf_counter()
        domain.provision()
        t1 = time.perf_counter()
        domain.start()
        t2 = time.perf_counter()
        print(f"samba: provision {t1 - t0:.2f} s, start until an LDAPS bind answers {t2 - t1:.2f} s")
        secret = domain.root / "bench-secret"
        secret.write_text(domain.admin_password)
        secret.chmod(0o600)
        settings = _settings(domain, secret)
        names = [f"BH{index:04d}" for index in range(2 * (pairs + repeat))]
        t0 = time.perf_counter()
        for name in names:
            domain.add_computer(name)
        print(f"seeded {len(names)} computer accounts in {time.perf_counter() - t0:.2f} s")
        requests = [
            EnsureDelegationInput(DelegationHost(names[2 * i]), DelegationHost(names[2 * i + 1]))
            for i in range(pairs + repeat)
        ]
        singles, bulk = requests[:repeat], requests[repeat:]

        def activity_ensure(request: EnsureDelegationInput) -> EnsureDelegationResult:
            with DirectoryClient(settings) as client:
                return client.ensure_delegation(request)

        def activity_revert(result: EnsureDelegationResult) -> RevertDelegationResult:
            with DirectoryClient(settings) as client:
                return client.revert_delegation(result)

        # One pair, a new connection each time (as one activity call), repeated for a median.
        ensure_s: list[float] = []
        again_s: list[float] = []
        revert_s: list[float] = []
        for request in singles:
            start = time.perf_counter()
            result = activity_ensure(request)
            ensure_s.append(time.perf_counter() - start)
            again_s.append(_timed(lambda r=request: activity_ensure(r)))  # type: ignore[misc]
            revert_s.append(_timed(lambda r=result: activity_revert(r)))  # type: ignore[misc]
        print(f"\none pair (activity: connect + bind + work), median of {repeat}:")
        print(f"  ensure (8 values, 2 bits)   {statistics.median(ensure_s) * 1000:7.1f} ms")
        print(f"  ensure again (no change)    {statistics.median(again_s) * 1000:7.1f} ms")
        print(f"  revert                      {statistics.median(revert_s) * 1000:7.1f} ms")

        # Many pairs: one activity per pair, sequentially.
        results: list[EnsureDelegationResult] = []
        t_ensure = _timed(lambda: results.extend(activity_ensure(r) for r in bulk))
        t_revert = _timed(lambda: [activity_revert(r) for r in results])
        # Many pairs through one connection.
        with DirectoryClient(settings) as client:
            client.read_computer(names[0])  # connect and bind outside the timing
            results = []
            t_ensure_one = _timed(lambda: results.extend(client.ensure_delegation(r) for r in bulk))
            t_revert_one = _timed(lambda: [client.revert_delegation(r) for r in results])
        print(f"\n{pairs} pairs, sequential:")
        print(f"  {'':26}{'total':>9}{'per pair':>11}")
        for label, seconds in (
            ("ensure, one activity each", t_ensure),
            ("revert, one activity each", t_revert),
            ("ensure, one connection", t_ensure_one),
            ("revert, one connection", t_revert_one),
        ):
            print(f"  {label:26}{seconds:8.2f}s{seconds / pairs * 1000:9.1f}ms")
    finally:
        domain.stop()
        (domain.root / "bench-secret").unlink(missing_ok=True)
        domain.release()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason:
        print(f"directory benchmark not run: {reason}", file=sys.stderr)
        return 2
    run(args.pairs, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
