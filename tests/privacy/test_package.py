"""``fedactors.privacy``'s lazy names: each is the object its module defines, imported on first
use (they pull in TensorFlow or dp-accounting), and a name it does not have is an
AttributeError naming it."""

from __future__ import annotations

import importlib

import pytest

import fedactors.privacy as privacy


@pytest.mark.parametrize("name", sorted(privacy._LAZY))
def test_a_lazy_name_is_its_modules_object(name: str) -> None:
    assert getattr(privacy, name) is getattr(importlib.import_module(privacy._LAZY[name]), name)
    assert name in privacy.__all__


def test_an_unknown_name_is_an_attribute_error_naming_it() -> None:
    with pytest.raises(AttributeError, match=r"^module 'fedactors\.privacy' has no attribute "
                                             r"'DPMeen'$"):
        privacy.DPMeen  # noqa: B018
    assert not hasattr(privacy, "no_such_thing")
