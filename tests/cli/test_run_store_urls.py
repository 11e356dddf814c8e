"""``--store`` URLs of ``ctxflow run`` and ``ctxflow checkpoints``, against the real servers:
a run's checkpoints land in PostgreSQL (or Redis), and list and restore read them back."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctxflow.cli import main
from ctxflow.model import read_transcripts

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "transcripts"
PONY = EXAMPLES / "openhands-ponyc-4588.jsonl"
REDIS_URL = "redis://127.0.0.1:6379/0"
REQUIRE_REDIS = os.environ.get("CTXFLOW_REQUIRE_REDIS") == "1"


def _run_into(store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Replay the pony transcript into ``store``; the session id its report names."""
    report = tmp_path / "report.json"
    assert main(["run", str(PONY), "--store", store, "--quiet", "--report", str(report)]) == 0
    capsys.readouterr()
    document = json.loads(report.read_text(encoding="utf-8"))
    assert document["store"] == store
    return str(document["session"])


@pytest.fixture
def pg_store_url(pg_url: str, pg_schema: str) -> str:
    """A PostgreSQL store URL in the test's own schema, with a tenant."""
    return f"{pg_url}?schema={pg_schema}&tenant=cli"


@pytest.mark.postgres
def test_run_then_list_and_restore_from_postgresql(
    pg_store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ctxflow run --store postgresql://…`` writes its checkpoints there; ``checkpoints list``
    names the session and its transcript, and ``restore`` writes the conversation back."""
    session = _run_into(pg_store_url, tmp_path, capsys)
    assert main(["checkpoints", "list", "--store", pg_store_url, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["session"] == session
    assert row["transcript"] == PONY.name
    assert main(["checkpoints", "list", "--store", pg_store_url, session, "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert records[-1]["phase"] == "done" and len(records) == row["checkpoints"]
    out = tmp_path / "restored.jsonl"
    args = ["checkpoints", "restore", "--store", pg_store_url, session, "--view", "log"]
    assert main([*args, "--out", str(out)]) == 0
    (restored,) = read_transcripts(out)
    (original,) = read_transcripts(PONY)
    assert len(restored.messages) == records[-1]["messages"]
    texts = {m.text for m in original.messages}
    assert restored.messages[0].text in texts
    assert sum(m.text in texts for m in restored.messages) > len(restored.messages) // 2


@pytest.mark.postgres
def test_checkpoints_of_a_missing_postgresql_store_exit_2_creating_nothing(
    pg_url: str, pg_schema: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``checkpoints list`` on a schema holding no store is one line and exit 2, and the schema
    is not created."""
    import psycopg

    assert main(["checkpoints", "list", "--store", f"{pg_url}?schema={pg_schema}"]) == 2
    err = capsys.readouterr().err
    assert "must exist already" in err and err.count("\n") == 1
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (pg_schema,)
        ).fetchone()
    assert row == (0,)


def test_an_unreachable_postgresql_server_exits_2_and_makes_no_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A PostgreSQL URL no server answers is one line and exit 2 with its password hidden, and
    no folder named 'postgresql:' appears (a URL is never taken for a path)."""
    monkeypatch.chdir(tmp_path)
    url = "postgresql://me:s3cret@127.0.0.1:1/none?connect_timeout=1"
    assert main(["run", str(PONY), "--store", url, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "s3cret" not in err and "me:***@" in err
    assert main(["checkpoints", "list", "--store", url]) == 2
    assert not list(tmp_path.iterdir())


@pytest.fixture
def redis_tenant() -> Iterator[str]:
    """A fresh tenant on the local Redis, its keys deleted afterwards."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        reason = f"no Redis answers on 127.0.0.1:6379 ({exc})"
        if REQUIRE_REDIS:
            pytest.fail(f"{reason} and CTXFLOW_REQUIRE_REDIS=1")
        pytest.skip(reason)
    tenant = f"test-{uuid.uuid4().hex[:12]}"
    yield tenant
    keys = list(client.scan_iter(match=f"ctxflow:{tenant}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.mark.redis
def test_run_then_list_from_redis(
    redis_tenant: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--store redis://…?tenant=`` keeps the run's checkpoints in Redis under that tenant."""
    store = f"{REDIS_URL}?tenant={redis_tenant}"
    session = _run_into(store, tmp_path, capsys)
    assert main(["checkpoints", "list", "--store", store]) == 0
    assert session in capsys.readouterr().out
