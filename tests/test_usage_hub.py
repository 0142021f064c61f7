"""Quotas per JupyterHub group: the groups the Hub gives the server's user count, besides the
admin's ``c.EKSRay.user_groups``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from jupyter_server.auth.identity import IdentityProvider, User
from tornado.httpclient import HTTPClientError


@dataclass
class HubUser(User):
    hub_user: dict[str, Any] = field(default_factory=dict)


class HubIdentity(IdentityProvider):
    """What JupyterHub's identity provider gives a single-user server: the Hub's user model."""

    def get_user(self, handler: Any) -> HubUser:
        handler._token_authenticated = True  # as the Hub's token auth is (no XSRF check)
        return HubUser(username="alice", hub_user={"name": "alice", "groups": ["ml-team"]})


@pytest.fixture
def jp_server_config(state_dir: Path) -> dict[str, Any]:
    return {
        "ServerApp": {
            "jpserver_extensions": {"eksray_jupyter": True},
            "identity_provider_class": "tests.test_usage_hub.HubIdentity",
        },
        "EKSRay": {
            "state_dir": str(state_dir),
            "backend": "tests.memory_backend.MemoryBackend",
            "owner": "alice",
            "user_groups": {"alice": ["admins-said"]},
            "quotas": {
                "default": {"maxCpus": 2},
                "groups": {"ml-team": {"maxCpus": 3}, "admins-said": {"maxGpus": 1}},
            },
        },
        "EKSRayExtension": {"stream_heartbeat_seconds": 0},
    }


async def test_the_hubs_groups_and_the_admins_both_count(jp_fetch: Any) -> None:
    report = json.loads((await jp_fetch("eksray", "api", "usage")).body)
    assert report["quota"]["groups"] == ["admins-said", "ml-team"]
    assert (
        report["quota"]["limits"]["maxCpus"] == 3 and report["quota"]["sources"]["maxCpus"] == "group ml-team"
    )
    assert report["quota"]["sources"]["maxGpus"] == "group admins-said"
    spec = {
        "name": "big",
        "autoscaling": {"enabled": False},
        "head": {"cpu": 2},
        "workerGroups": [{"groupName": "w", "replicas": 1, "cpu": 2}],
    }
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("eksray", "api", "clusters", method="POST", body=json.dumps(spec))
    assert info.value.code == 409
    assert (
        "CPUs: 4 would exceed the limit of 3 (group ml-team"
        in json.loads(info.value.response.body)["message"]
    )
