"""Compatibility re-exports; import from ctxflow.persistence (or ctxflow.stores)."""

from ctxflow.persistence._redis import Fence, RedisKeys, RedisStore, check_session_id, check_tenant

__all__ = ["Fence", "RedisKeys", "RedisStore", "check_session_id", "check_tenant"]
