"""The lab's WinRM server: WS-Management over HTTP(S) with Basic, NTLM, Negotiate and CredSSP.

Run one simulated host::

    from lab.wsman import HostEndpoint, make_tls_material

    tls = make_tls_material(Path(tmpdir), "hv01.lab.test")
    with HostEndpoint("hv01", runner, {"LAB\\\\admin": "secret"}, tls=tls) as host:
        # pypsrp: WSMan("127.0.0.1", port=host.https_port, auth="basic", cert_validation=str(tls.ca_path), ...)
        ...
"""

from lab.wsman.auth import AUTH_MODES, Identity, NtlmUserStore
from lab.wsman.faults import FaultCode, WSManFault
from lab.wsman.server import EndpointStats, HostEndpoint, RequestLog
from lab.wsman.service import WinRMQuotas, WSManService
from lab.wsman.tls import CertificateAuthority, TlsMaterial, make_tls_material

__all__ = [
    "AUTH_MODES",
    "CertificateAuthority",
    "EndpointStats",
    "FaultCode",
    "HostEndpoint",
    "Identity",
    "NtlmUserStore",
    "RequestLog",
    "TlsMaterial",
    "WSManFault",
    "WSManService",
    "WinRMQuotas",
    "make_tls_material",
]
