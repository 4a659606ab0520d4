"""The byzantine experiment's command line: a variant it does not have is refused."""

from __future__ import annotations

import pytest

from fedactors.experiments.byzantine import main


def test_an_unknown_variant_is_refused_naming_the_variants(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--rounds", "1", "--only", "median", "bogus"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--only: no variant named 'bogus'" in err and "'median'" in err
