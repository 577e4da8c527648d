"""The public surface is what ``__all__`` says, and nothing leaks past it."""

from __future__ import annotations

import importlib
import inspect

import pytest

PUBLIC_MODULES = ["acp.protocol", "acp.agents", "acp.errors"]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_names_resolve_and_nothing_public_is_missing(name: str) -> None:
    module = importlib.import_module(name)
    exported = set(module.__all__)
    assert len(exported) == len(module.__all__), "duplicate names in __all__"
    for attr in exported:
        assert hasattr(module, attr), f"{name}.__all__ lists missing {attr!r}"
    for attr, value in vars(module).items():
        if attr.startswith("_") or inspect.ismodule(value):
            continue
        defined_here = getattr(value, "__module__", "").startswith("acp")
        if (inspect.isclass(value) or inspect.isfunction(value)) and defined_here:
            assert attr in exported, f"{name}.{attr} is public but not in __all__"


def test_every_error_descends_from_the_root() -> None:
    import acp.errors as errors

    for attr in errors.__all__:
        assert issubclass(getattr(errors, attr), errors.ACPError)
        assert attr in errors.__doc__, f"{attr} missing from the tree in the docstring"
