"""Tenant names: only what cannot break out of a key namespace."""

from __future__ import annotations

import pytest

from ctxflow.errors import StoreError
from ctxflow.stores import check_tenant


@pytest.mark.parametrize("name", ["acme", "a.b-c_d", "x" * 64])
def test_plain_tenant_names_pass(name: str) -> None:
    """Letters, digits, '_', '.' and '-' up to 64 characters are a tenant name."""
    assert check_tenant(name) == name


@pytest.mark.parametrize("name", ["acme\n", "", "a:b", "a b", "x" * 65, "{tag}", "é"])
def test_other_tenant_names_are_refused(name: str) -> None:
    """A trailing newline, a separator, a hash tag or a long name is refused by name."""
    with pytest.raises(StoreError, match="'tenant' must be") as caught:
        check_tenant(name)
    assert caught.value.rule == "tenant"
