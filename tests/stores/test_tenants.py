"""Tenant names: only what cannot break out of a key namespace (Redis) or a tenant's rows
(PostgreSQL): one rule for both stores."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ctxflow.errors import StoreError
from ctxflow.persistence._names import check_tenant as postgres_check
from ctxflow.stores import check_tenant

CHECKS = pytest.mark.parametrize("check", [check_tenant, postgres_check], ids=["redis", "postgres"])


@CHECKS
@pytest.mark.parametrize("name", ["acme", "a.b-c_d", "x" * 64])
def test_plain_tenant_names_pass(check: Callable[[str], str], name: str) -> None:
    """Letters, digits, '_', '.' and '-' up to 64 characters are a tenant name."""
    assert check(name) == name


@CHECKS
@pytest.mark.parametrize("name", ["acme\n", "", "a:b", "a b", "x" * 65, "{tag}", "é"])
def test_other_tenant_names_are_refused(check: Callable[[str], str], name: str) -> None:
    """A trailing newline, a separator, a hash tag or a long name is refused by name."""
    with pytest.raises(StoreError, match="'tenant' must be") as caught:
        check(name)
    assert caught.value.rule == "tenant"
