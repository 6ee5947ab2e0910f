"""The engine's error classes and their Temporal form."""

from __future__ import annotations

import pytest

from activities.errors import (
    AdmissionError,
    ConfigurationError,
    ErrorKind,
    SnlmError,
    TransientError,
    UnknownError,
    UnknownHostError,
)


@pytest.mark.parametrize(
    ("cls", "kind", "non_retryable"),
    [
        (ConfigurationError, ErrorKind.CONFIGURATION, True),
        (UnknownHostError, ErrorKind.CONFIGURATION, True),
        (TransientError, ErrorKind.TRANSIENT, False),
        (AdmissionError, ErrorKind.ADMISSION, True),
        (UnknownError, ErrorKind.UNKNOWN, False),
    ],
)
def test_application_error_follows_the_kind(cls: type[SnlmError], kind: ErrorKind, non_retryable: bool) -> None:
    error = cls("HV01$ is wrong.", error_type="SomethingWrong", remedy="fix HV01.", details={"account": "HV01$"})

    app = error.to_application_error()

    assert error.kind is kind
    assert app.type == "SomethingWrong"
    assert app.non_retryable is non_retryable
    assert app.message == "HV01$ is wrong. Remedy: fix HV01."
    assert app.details == (
        {"kind": str(kind), "error_type": "SomethingWrong", "remedy": "fix HV01.", "account": "HV01$"},
    )
