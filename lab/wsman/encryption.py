"""WinRM message encryption over HTTP (MS-WSMV 2.2.9.1): the multipart/encrypted framing.

A sealed message is a MIME-like body with the boundary `Encrypted Boundary`:

    --Encrypted Boundary\\r\\n
    \\tContent-Type: application/HTTP-SPNEGO-session-encrypted\\r\\n
    \\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=<plaintext length>\\r\\n
    --Encrypted Boundary\\r\\n
    \\tContent-Type: application/octet-stream\\r\\n
    <4-byte little-endian signature length><signature><sealed bytes>
    --Encrypted Boundary--\\r\\n

CredSSP seals with the TLS channel of the handshake; a message larger than 16 KiB is sent as several such
parts in one `multipart/x-multi-encrypted` body, one part per 16 KiB chunk (a TLS record's limit). The
security context (pyspnego) does the cryptography; this module owns only the framing, written for the
lab rather than borrowed from the client library.
"""

from __future__ import annotations

import re
import struct
from typing import Any, Protocol

BOUNDARY = "Encrypted Boundary"
SPNEGO_PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"
KERBEROS_PROTOCOL = "application/HTTP-Kerberos-session-encrypted"
CREDSSP_PROTOCOL = "application/HTTP-CredSSP-session-encrypted"
_CREDSSP_CHUNK = 16384
_ORIGINAL_CONTENT = re.compile(rb"^\tOriginalContent: type=application/soap\+xml;charset=UTF-8;Length=(\d+)$", re.I)
_BOUNDARY_PARAM = re.compile(r'boundary="?([^";]+)"?', re.I)


class EncryptionError(Exception):
    """The body is not a well-formed sealed message, or it did not unseal."""


class SealingContext(Protocol):
    """The part of a pyspnego context that WinRM sealing uses."""

    def wrap_winrm(self, data: bytes) -> Any: ...

    def unwrap_winrm(self, header: bytes, data: bytes) -> bytes: ...


def is_encrypted(content_type: str) -> bool:
    """True when the request or response body is sealed."""
    lowered = content_type.lower()
    return lowered.startswith(("multipart/encrypted", "multipart/x-multi-encrypted"))


def unwrap(body: bytes, content_type: str, context: SealingContext) -> bytes:
    """Unseal a multipart/encrypted body into the SOAP envelope it carries."""
    match = _BOUNDARY_PARAM.search(content_type)
    marker = b"--" + (match.group(1) if match else BOUNDARY).encode("ascii")
    next_part = marker + b"\r\n\t"
    end = marker + b"--\r\n"
    pos = 0
    plaintext = bytearray()
    while pos < len(body):
        if body.startswith(end, pos):
            if not plaintext:
                break
            return bytes(plaintext)
        lines, pos = _read_part_headers(body, pos, marker)
        if len(lines) != 3:
            raise EncryptionError("malformed encrypted part headers")
        length_match = _ORIGINAL_CONTENT.match(lines[1])
        if not length_match or not lines[2].lower().startswith(b"\tcontent-type: application/octet-stream"):
            raise EncryptionError("malformed encrypted part headers")
        expected = int(length_match.group(1))
        if pos + 4 > len(body):
            raise EncryptionError("truncated encrypted part")
        (header_length,) = struct.unpack("<I", body[pos : pos + 4])
        header_start = pos + 4
        data_start = header_start + header_length
        # The sealed bytes run to the next part or the closing boundary. For NTLM the sealed length is
        # the plaintext length, which pins the boundary exactly; for TLS (CredSSP) search for it.
        data_end = data_start + expected
        if not (body.startswith(next_part, data_end) or body.startswith(end, data_end)):
            candidates = [i for i in (body.find(next_part, data_start), body.find(end, data_start)) if i >= 0]
            if not candidates:
                raise EncryptionError("encrypted part has no closing boundary")
            data_end = min(candidates)
        try:
            chunk = context.unwrap_winrm(body[header_start:data_start], body[data_start:data_end])
        except Exception as exc:  # pyspnego raises several types; all mean "did not unseal"
            raise EncryptionError(f"message did not unseal: {type(exc).__name__}") from None
        if len(chunk) != expected:
            raise EncryptionError("unsealed length does not match OriginalContent Length")
        plaintext += chunk
        pos = data_end
    raise EncryptionError("encrypted body has no closing boundary")


def _read_part_headers(body: bytes, pos: int, marker: bytes) -> tuple[list[bytes], int]:
    """Read `marker`, two header lines, `marker`, one header line; return the three lines and the offset."""
    lines: list[bytes] = []
    for expect_marker in (True, False, False, True, False):
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            raise EncryptionError("truncated encrypted part headers")
        line = body[pos:eol]
        pos = eol + 2
        if expect_marker:
            if line != marker:
                raise EncryptionError("expected the encryption boundary")
        else:
            lines.append(line)
    return lines, pos


def wrap(message: bytes, context: SealingContext, protocol: str) -> tuple[str, bytes]:
    """Seal `message`; return the Content-Type header value and the body."""
    marker = f"--{BOUNDARY}"
    if protocol == CREDSSP_PROTOCOL and len(message) > _CREDSSP_CHUNK:
        media_type = "multipart/x-multi-encrypted"
        chunks = [message[i : i + _CREDSSP_CHUNK] for i in range(0, len(message), _CREDSSP_CHUNK)]
    else:
        media_type = "multipart/encrypted"
        chunks = [message]
    body = bytearray()
    for chunk in chunks:
        result = context.wrap_winrm(chunk)
        header, sealed, padding = result.header, result.data, result.padding_length
        body += (
            f"{marker}\r\n\tContent-Type: {protocol}\r\n"
            f"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length={len(chunk) + padding}\r\n"
            f"{marker}\r\n\tContent-Type: application/octet-stream\r\n"
        ).encode("ascii")
        body += struct.pack("<I", len(header)) + header + sealed
    body += f"{marker}--\r\n".encode("ascii")
    content_type = f'{media_type};protocol="{protocol}";boundary="{BOUNDARY}"'
    return content_type, bytes(body)
