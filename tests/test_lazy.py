"""orchestrator.lazy: optional modules load on first use, name the fix when missing, then cost nothing."""

from __future__ import annotations

import pytest

from orchestrator.errors import MissingDependencyError
from orchestrator.lazy import lazy_import


def test_a_missing_module_fails_on_first_use_with_the_install_hint():
    missing = lazy_import("tensorrt_not_installed_here")
    with pytest.raises(MissingDependencyError, match="tensorrt_not_installed_here.*pip install"):
        missing.Builder  # noqa: B018


def test_after_the_first_use_attributes_are_plain_namespace_lookups():
    # driver calls on the hot path go through such a module: a failed lookup + __getattr__ per call
    # cost ~2 µs each; after loading, the module's names live in the proxy's own namespace
    json = lazy_import("json")
    assert "dumps" not in vars(json)
    assert json.dumps({"a": 1}) == '{"a": 1}'
    assert vars(json)["dumps"] is __import__("json").dumps and json.__name__ == "json"
