"""The config store from the bridge, against a real nats-server and orchestrator: put and get,
compare-and-set conflicts, listings by whole-part prefix, the history with who changed what, a
revert, a delete, a value the prefix's schema refuses, keys checked before sending, and watches
that see a change made over HTTP (sync and asyncio clients); the engine may read but not write."""

from __future__ import annotations

import asyncio

import pytest

from orch_bridge import (
    AsyncClient,
    Client,
    ConfigChange,
    ConfigEntry,
    ConfigSchema,
    ConflictError,
    NotFoundError,
    PermissionDenied,
    ValidationError,
)


def test_put_get_list_conflicts_history_revert_schema_and_delete(stack):
    with Client.connect(stack.url) as client:
        first = client.config_put("web.db.url", "postgres://a", revision=0)
        assert isinstance(first, ConfigChange), first
        assert (first.key, first.op, first.principal, first.previous_revision) == (
            "web.db.url", "put", "nats:operator", None
        )
        entry = client.config_get("web.db.url")
        assert isinstance(entry, ConfigEntry) and (entry.value, entry.revision) == ("postgres://a", first.revision)
        assert entry.updated_at.tzinfo is not None

        with pytest.raises(ConflictError) as exists:
            client.config_put("web.db.url", "x", revision=0)
        assert exists.value.field == "revision"
        second = client.config_put("web.db.url", "postgres://b", revision=first.revision)
        assert (second.previous, second.previous_revision, second.value) == ("postgres://a", first.revision, "postgres://b")
        with pytest.raises(ConflictError) as stale:
            client.config_put("web.db.url", "c", revision=first.revision)
        assert stale.value.field == "revision"

        client.config_put("web.dbx", 1)
        client.config_put("web.db.pool", {"size": 4})
        listed = client.config_list("web.db")
        assert [e.key for e in listed.entries] == ["web.db.pool", "web.db.url"] and not listed.truncated
        assert client.config_list().values() == {"web.db.pool": {"size": 4}, "web.db.url": "postgres://b", "web.dbx": 1}

        history = client.config_history("web.db.url")
        assert [c.revision for c in history.changes] == [second.revision, first.revision]
        assert {c.principal for c in history.changes} == {"nats:operator"}
        reverted = client.config_revert("web.db.url", first.revision)
        assert (reverted.op, reverted.reverted_to, reverted.value) == ("revert", first.revision, "postgres://a")
        assert client.config_get("web.db.url").value == "postgres://a"

        schema = {"type": "object", "properties": {"size": {"type": "integer", "minimum": 1}}, "required": ["size"]}
        set_ = client.config_set_schema("web.db.pool", schema)
        assert isinstance(set_, ConfigSchema) and (set_.prefix, set_.set_by) == ("web.db.pool", "nats:operator")
        with pytest.raises(ValidationError) as refused:
            client.config_put("web.db.pool", {"size": 0})
        assert refused.value.field == "value" and "web.db.pool" in refused.value.message
        assert [s.prefix for s in client.config_schemas()] == ["web.db.pool"]
        client.config_clear_schema("web.db.pool")
        assert client.config_schemas() == []
        with pytest.raises(NotFoundError):
            client.config_clear_schema("web.db.pool")
        client.config_put("web.db.pool", {"size": 0})

        dbx = client.config_get("web.dbx")
        with pytest.raises(ConflictError) as moved:
            client.config_delete("web.dbx", revision=dbx.revision + 1000)
        assert moved.value.field == "revision"
        deleted = client.config_delete("web.dbx", revision=dbx.revision)
        assert (deleted.op, deleted.deleted, deleted.previous, deleted.value) == ("delete", True, 1, None)
        with pytest.raises(NotFoundError):
            client.config_get("web.dbx")

        # Keys are checked here as the orchestrator checks them.
        for bad in ["", ".web", "web.", "web..db", "web db", "web/db", "web.*", "web.>", "a" * 256, ".".join("a" * 17)]:
            with pytest.raises(ValidationError) as invalid:
                client.config_get(bad)
            assert invalid.value.field == "key", bad
        with pytest.raises(ValidationError) as bad_prefix:
            client.config_list("web.*")
        assert bad_prefix.value.field == "prefix"
        with pytest.raises(ValidationError) as bad_revision:
            client.config_put("web.x", 1, revision=-1)
        assert bad_revision.value.field == "revision"


def test_watch_sees_changes_made_over_http_under_whole_parts(stack):
    with Client.connect(stack.url) as client, client.config_watch("web.db") as changes:
        for key, value in (("web.dbx", 1), ("web.db.url", "u")):
            status, reply = stack.http("PUT", f"/api/v1/config/{key}", {"value": value})
            assert status == 200, reply
        change = changes.next(timeout=30)
        assert change is not None, "no change within 30 s"
        assert (change.key, change.op, change.value, change.principal) == ("web.db.url", "put", "u", "anonymous")
        status, reply = stack.http("DELETE", "/api/v1/config/web.db.url")
        assert status == 200, reply
        deleted = changes.next(timeout=30)
        assert deleted is not None and (deleted.key, deleted.op) == ("web.db.url", "delete")
    assert changes.closed


def test_async_config_and_watch(stack):
    async def run():
        async with await AsyncClient.connect(stack.url) as client:
            async with await client.config_watch("web") as changes:
                await client.config_put("other.x", 1)
                await client.config_put("web.port", 8080, revision=0)
                status, reply = stack.http("PUT", "/api/v1/config/web.port", {"value": 8081})
                assert status == 200, reply
                seen = [await asyncio.wait_for(changes.__anext__(), 30) for _ in range(2)]
            entry = await client.config_get("web.port")
            listed = await client.config_list("web")
            history = await client.config_history("web.port")
            with pytest.raises(ConflictError):
                await client.config_put("web.port", 1, revision=0)
            return seen, entry, listed, history

    seen, entry, listed, history = asyncio.run(run())
    assert [(c.key, c.value, c.principal) for c in seen] == [
        ("web.port", 8080, "nats:operator"),
        ("web.port", 8081, "anonymous"),
    ]
    assert entry.value == 8081 and [e.key for e in listed.entries] == ["web.port"]
    assert [c.principal for c in history.changes] == ["anonymous", "nats:operator"]


@pytest.mark.parametrize("role", ["engine", "observer"])
def test_engine_and_observer_read_but_do_not_write(stack, role):
    with Client.connect(stack.url) as operator:
        operator.config_put("web.db.url", "postgres://a")
    with Client.connect(stack.user_url(role)) as client:
        assert client.config_get("web.db.url").value == "postgres://a"
        assert [e.key for e in client.config_list("web").entries] == ["web.db.url"]
        assert len(client.config_history("web.db.url").changes) == 1
        assert client.config_schemas() == []
        with pytest.raises(PermissionDenied):
            client.config_put("web.db.url", "postgres://b")
        with pytest.raises(PermissionDenied):
            client.config_delete("web.db.url")
