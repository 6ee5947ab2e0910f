"""config.directory: a secret reference names a variable or a file; resolving it says which and why, never the value."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from config.directory import DirectorySettings, SecretRef, SecretUnavailable

SECRET = "s3cr3t-Bind-77d2"


def test_a_reference_names_exactly_one_place() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        SecretRef()
    with pytest.raises(ValidationError, match="exactly one"):
        SecretRef(env="X", file=Path("/x"))


def test_resolving_reads_the_variable_or_the_first_line_of_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SNLM_TEST_BIND", SECRET)
    assert SecretRef(env="SNLM_TEST_BIND").resolve().get_secret_value() == SECRET
    secret_file = tmp_path / "bind.password"
    secret_file.write_text(f"{SECRET}\nsecond line\n", encoding="utf-8")
    resolved = SecretRef(file=secret_file).resolve()
    assert resolved.get_secret_value() == SECRET
    assert SECRET not in repr(resolved) + str(resolved)


def test_an_unreadable_reference_says_where_and_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SNLM_TEST_BIND", raising=False)
    cases: list[tuple[SecretRef, str, str]] = [
        (SecretRef(env="SNLM_TEST_BIND"), "environment variable SNLM_TEST_BIND", "not set"),
        (SecretRef(file=tmp_path / "absent"), f"file {tmp_path / 'absent'}", "No such file or directory"),
        (SecretRef(file=tmp_path), f"file {tmp_path}", "Is a directory"),
    ]
    empty = tmp_path / "empty"
    empty.write_text("", encoding="utf-8")
    cases.append((SecretRef(file=empty), f"file {empty}", "empty"))
    for reference, where, reason in cases:
        with pytest.raises(SecretUnavailable) as caught:
            reference.resolve()
        assert (caught.value.reference, caught.value.reason) == (where, reason)
        assert str(caught.value) == f"{where}: {reason}"


def test_directory_settings_take_only_ldap_uris() -> None:
    with pytest.raises(ValidationError, match="ldaps://host"):
        DirectorySettings(uris=["http://dc1"], base_dn="DC=x", bind_user="u", bind_password=SecretRef(env="X"))
    settings = DirectorySettings(
        uris=["ldaps://dc1.corp.example"], base_dn="DC=x", bind_user="u", bind_password=SecretRef(env="X")
    )
    assert settings.validate_certificates
