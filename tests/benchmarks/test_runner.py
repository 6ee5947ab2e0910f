"""`make bench`'s runner: it names what could not run and why, and goes on with the rest."""

from __future__ import annotations

import pytest

from benchmarks.__main__ import main, run


def test_a_benchmark_that_cannot_run_is_named_with_its_reason() -> None:
    outcome = run("lab_bench", ["--no-such-flag"])
    assert outcome.status == 2
    assert "unrecognized arguments: --no-such-flag" in outcome.why


def test_an_unknown_benchmark_is_refused_with_the_known_ones() -> None:
    with pytest.raises(SystemExit) as refused:
        main(["--only", "nope"])
    assert refused.value.code == 2
