"""The public surface is what ``__all__`` says, and nothing leaks past it."""

from __future__ import annotations

import importlib
import inspect

import pytest

PUBLIC_MODULES = [
    "acp.protocol", "acp.agents", "acp.errors", "acp.runtime", "acp.catalogue", "acp.testing",
]  # fmt: skip


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
        home = getattr(value, "__module__", "")
        defined_here = home == name or home.startswith(name + ".")
        if (inspect.isclass(value) or inspect.isfunction(value)) and defined_here:
            assert attr in exported, f"{name}.{attr} is public but not in __all__"


def test_every_error_descends_from_the_root() -> None:
    import acp.errors as errors

    for attr in errors.__all__:
        assert issubclass(getattr(errors, attr), errors.ACPError)
        assert attr in errors.__doc__, f"{attr} missing from the tree in the docstring"


def test_the_runtime_surface_is_lazy_and_complete() -> None:
    """``acp.runtime`` names its public classes and loads them only when used, so a
    command that sends a message never pays for the anthropic SDK."""
    import subprocess
    import sys

    import acp.runtime

    assert sorted(acp.runtime.__all__) == sorted(acp.runtime._WHERE)
    probe = (
        "import sys, acp.cli, acp.runtime, acp.agents; "
        "from acp.runtime import Client, Worker, Coordinator; "
        "print('anthropic' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"


def test_the_command_line_starts_without_the_runtime() -> None:
    """``acp --help`` loads typer and rich, none of the runtime: each command imports
    what it runs when it runs (0.56 s before the CLI was a package, 0.18 s after)."""
    import subprocess
    import sys

    heavy = ("redis", "structlog", "pydantic", "anthropic", "msgpack", "zstandard", "mcp")
    probe = f"import sys, acp.cli; print([m for m in {heavy!r} if m in sys.modules])"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def test_the_testing_context_is_a_whole_context() -> None:
    """``acp.testing.TestContext`` has every member of ``acp.agents.Context`` (a
    handler written against the protocol runs on it unchanged)."""
    from acp.agents import Context
    from acp.protocol import Envelope
    from acp.testing import TestContext

    members = {n for n in dir(Context) if not n.startswith("_")}
    ctx = TestContext(Envelope.for_body({"cmd": "PING"}, sender="t", recipient="me"))
    assert not [n for n in members if not hasattr(ctx, n)]
    assert isinstance(ctx, Context)
