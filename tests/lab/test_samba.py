"""The lab's directory helpers that need no running domain: the passwords it generates."""

import string

from lab.samba import generate_password


def test_a_generated_password_is_never_read_as_an_option_and_meets_the_complexity_rules() -> None:
    # samba-tool takes the operator's password as a positional argument: one starting with "-" failed
    # provisioning about once in 64 runs. Enough samples to see that first character many times over.
    passwords = [generate_password() for _ in range(4000)]
    assert len(set(passwords)) == len(passwords)
    for password in passwords:
        assert not password.startswith("-"), password
        assert len(password) >= 20
        assert any(c in string.ascii_uppercase for c in password)
        assert any(c in string.ascii_lowercase for c in password)
        assert any(c in string.digits for c in password)
        assert any(not c.isalnum() for c in password)
