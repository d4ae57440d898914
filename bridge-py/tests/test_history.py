"""Manifest history and self-preservation from the bridge, against a real nats-server and
orchestrator: the stored versions with who applied them, one version's text, a typed diff, a
rollback applied like any apply (sync and asyncio clients); the engine may read the history but not
roll back; ending self-preservation when it is not on is a conflict."""

from __future__ import annotations

import asyncio

import pytest

from orch_bridge import (
    AsyncClient,
    Client,
    ConflictError,
    ManifestDiff,
    ManifestVersion,
    NotFoundError,
    PermissionDenied,
    StackApplied,
    ValidationError,
)


def shell(name: str, mode: str) -> str:
    return (
        f"\n[services.{name}]\n"
        'command = "/bin/sh"\n'
        'args = ["-c", "exec sleep 1000"]\n'
        f'env = {{ MODE = "{mode}" }}\n'
        'grace_period = "1s"\n'
    )


def test_versions_diff_and_rollback(stack):
    v1 = shell("web", "one")
    stack.apply(v1)
    stack.wait_states({"web": "ready"})
    stack.apply(shell("web", "two") + shell("extra", "x"))
    stack.wait_states({"web": "ready", "extra": "ready"})

    with Client.connect(stack.url) as client:
        page = client.manifest_versions()
        assert [v.version for v in page.versions] == [2, 1] and page.next_before is None
        newest, oldest = page.versions
        assert isinstance(newest, ManifestVersion) and newest.current and not oldest.current
        assert (oldest.source, oldest.principal, oldest.desired) == ("api", "anonymous", "up")
        assert newest.applied_at >= oldest.applied_at and newest.applied_at.tzinfo is not None
        assert newest.manifest is None, "a listing carries no text"
        first = client.manifest_versions(limit=1)
        assert [v.version for v in first.versions] == [2] and first.next_before == 2
        assert client.manifest_version(1).manifest == v1

        diff = client.manifest_diff(1, 2)
        assert isinstance(diff, ManifestDiff) and (diff.old, diff.new, diff.stack) == (1, 2, [])
        assert [(s.service, s.change) for s in diff.services] == [("extra", "added"), ("web", "changed")]
        web = diff.services[1]
        assert [(f.field, f.old, f.new) for f in web.fields] == [("env.MODE", "one", "two")]

        with pytest.raises(NotFoundError) as missing:
            client.manifest_version(9)
        assert missing.value.field == "version"
        with pytest.raises(ValidationError) as bad:
            client.manifest_diff(0, 2)
        assert bad.value.field == "old"

        applied = client.rollback(1)
        assert isinstance(applied, StackApplied) and applied.version == 3, applied
        assert "extra" in applied.replaced or "web" in applied.replaced, applied
    stack.wait_states({"web": "ready"})
    assert "extra" not in stack.services()

    async def read_back():
        async with await AsyncClient.connect(stack.url) as client:
            newest = (await client.manifest_versions(limit=1)).versions[0]
            same = await client.manifest_diff(1, 3)
            return newest, same

    newest, same = asyncio.run(read_back())
    assert (newest.version, newest.source, newest.principal) == (3, "rollback to v1", "nats:operator")
    assert same.empty


def test_the_engine_reads_the_history_but_may_not_roll_back_or_end_self_preservation(stack):
    stack.apply(shell("web", "one"))
    with Client.connect(stack.user_url("engine")) as engine:
        assert [v.version for v in engine.manifest_versions().versions] == [1]
        assert engine.manifest_diff(1, 1).empty
        with pytest.raises(PermissionDenied):
            engine.rollback(1)
        with pytest.raises(PermissionDenied):
            engine.end_self_preservation("no")
    with Client.connect(stack.url) as operator:
        with pytest.raises(ConflictError):
            operator.end_self_preservation("nothing to end")
