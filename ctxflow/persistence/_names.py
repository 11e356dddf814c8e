"""Checks on the names stores put into keys and SQL, and URLs made fit to print.

Here, apart from any backend, so that checking a store URL imports no
client library (``redis``, ``psycopg``).
"""

from __future__ import annotations

import re

from ctxflow.errors import StoreError

__all__ = ["check_schema", "check_tenant", "redact"]

_TENANT = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_CREDENTIALS = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^@/?#]*)@")


def check_tenant(tenant: object) -> str:
    """``tenant`` when it is a valid tenant name (1-64 of letters, digits, ``_.-``), else
    StoreError: it cannot break out of a key namespace or a tenant's rows."""
    if not isinstance(tenant, str) or not _TENANT.fullmatch(tenant):
        raise StoreError(
            f"'tenant' must be 1-64 characters of letters, digits, '_', '.' or '-' "
            f"(got {tenant!r})",
            rule="tenant",
            tenant=tenant,
        )
    return tenant


def check_schema(schema: object) -> str:
    """``schema`` when it is a plain lower-case PostgreSQL name, else StoreError."""
    if not isinstance(schema, str) or not _SCHEMA.fullmatch(schema):
        raise StoreError(
            f"'schema' must be 1-63 characters of lower-case letters, digits and '_', "
            f"not starting with a digit (got {schema!r})",
            rule="postgres_schema",
            schema=schema,
        )
    return schema


def redact(url: str) -> str:
    """``url`` with the password of its user part replaced by ``***``."""
    match = _CREDENTIALS.match(url)
    if match is None or ":" not in match.group(2):
        return url
    user = match.group(2).split(":", 1)[0]
    return f"{match.group(1)}{user}:***@{url[match.end() :]}"
