"""Credentials of the kuberay backend: EKS tokens against a moto server on loopback, in-cluster,
and no secret ever in a log line, an error message or an answer."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import boto3
import pytest
from moto.server import ThreadedMotoServer

from eksray_jupyter.backends.kuberay import KubeRayBackend
from eksray_jupyter.backends.kuberay.credentials import (
    CredentialSettings,
    EKSTokenSource,
    bearer_header,
    build_configuration,
    eks_configuration,
)
from eksray_jupyter.core.config import DEFAULT_PROFILES
from eksray_jupyter.core.errors import BackendError
from eksray_jupyter.core.spec import resolve_cluster_spec

from .fakekube import FakeKubeServer, pytest_plugin

ACCESS_KEY = "AKIAEKSRAYTESTKEY001"
SECRET_KEY = "eksray/test/secret+key/0123456789abcdefABCD"
REGION = "eu-west-1"

# The fake API server's fixtures, used by name below.
fakekube = pytest_plugin.fakekube


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """A moto server on a free loopback port (stopped afterwards) and credentials only for it."""
    for var in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def eks_cluster(aws: str) -> dict[str, Any]:
    name = f"prod-{uuid.uuid4().hex[:8]}"  # moto's state is per process: a fresh name per test
    eks = boto3.client("eks", region_name=REGION, endpoint_url=aws)
    eks.create_cluster(
        name=name, roleArn="arn:aws:iam::123456789012:role/eks", resourcesVpcConfig={"subnetIds": []}
    )
    return {"name": name, **eks.describe_cluster(name=name)["cluster"]}


def settings(aws: str, cluster: str) -> CredentialSettings:
    return CredentialSettings(
        mode="eks",
        eks_cluster_name=cluster,
        eks_region=REGION,
        aws_endpoint_urls={"eks": aws, "sts": aws},
    )


def decode_token(header: str) -> str:
    scheme, _, token = header.partition(" ")
    assert scheme == "Bearer"
    assert token.startswith("k8s-aws-v1.")
    body = token[len("k8s-aws-v1.") :]
    assert "=" not in body, "base64url without padding"
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()


def sigv4_valid(url: str, cluster: str, secret: str) -> bool:
    """Check a presigned URL's signature the way STS does (SigV4, query auth)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    signature = query.pop("X-Amz-Signature")
    canonical_query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query.items())
    )
    headers = {"host": parts.netloc, "x-k8s-aws-id": cluster}
    signed = query["X-Amz-SignedHeaders"].split(";")
    canonical_headers = "".join(f"{h}:{headers[h]}\n" for h in signed)
    date, scope = query["X-Amz-Date"], query["X-Amz-Credential"].split("/", 1)[1]
    key = ("AWS4" + secret).encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    for payload in (hashlib.sha256(b"").hexdigest(), "UNSIGNED-PAYLOAD"):
        request = "\n".join(
            ["GET", parts.path or "/", canonical_query, canonical_headers, ";".join(signed), payload]
        )
        to_sign = "\n".join(["AWS4-HMAC-SHA256", date, scope, hashlib.sha256(request.encode()).hexdigest()])
        if hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest() == signature:
            return True
    return False


def test_eks_endpoint_ca_and_token(aws: str, eks_cluster: dict[str, Any]) -> None:
    cfg, _source = eks_configuration(settings(aws, eks_cluster["name"]))
    assert cfg.host == eks_cluster["endpoint"]
    authority = base64.b64decode(eks_cluster["certificateAuthority"]["data"])
    assert cfg.ca_cert_data in (authority, authority.decode("latin-1"))  # moto's CA is random bytes
    url = decode_token(bearer_header(cfg) or "")
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == aws  # the STS endpoint we configured
    query = dict(parse_qsl(parts.query))
    assert query["Action"] == "GetCallerIdentity"
    assert query["X-Amz-Expires"] == "60"
    assert query["X-Amz-SignedHeaders"] == "host;x-k8s-aws-id"
    assert (
        query["X-Amz-Credential"].startswith(f"{ACCESS_KEY}/")
        and f"/{REGION}/sts/" in query["X-Amz-Credential"]
    )
    assert sigv4_valid(url, eks_cluster["name"], SECRET_KEY)
    assert not sigv4_valid(url, "another-cluster", SECRET_KEY), "the cluster name is part of the signature"


def test_eks_token_is_refreshed_before_it_expires(aws: str) -> None:
    now = [1000.0]
    sts = boto3.client("sts", region_name=REGION, endpoint_url=aws)
    minted: list[str] = []
    real = sts.generate_presigned_url

    def counting(*args: Any, **kwargs: Any) -> str:
        minted.append("x")
        return real(*args, **kwargs)

    sts.generate_presigned_url = counting  # type: ignore[method-assign]
    source = EKSTokenSource("prod", sts, refresh_seconds=600, clock=lambda: now[0])
    first = source.token()
    now[0] += 599
    assert source.token() == first and len(minted) == 1
    now[0] += 1
    source.token()
    assert len(minted) == 2


def test_eks_errors_name_the_problem_not_the_secret(aws: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BackendError, match="Cannot describe EKS cluster 'missing'") as info:
        eks_configuration(settings(aws, "missing"))
    assert SECRET_KEY not in str(info.value)
    with pytest.raises(BackendError, match="eks_region"):
        build_configuration(CredentialSettings(mode="eks", eks_cluster_name="x"))


def test_in_cluster_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import kubernetes.config.incluster_config as incluster

    (tmp_path / "token").write_text("sa-token-123")
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    monkeypatch.setattr(incluster, "SERVICE_TOKEN_FILENAME", str(tmp_path / "token"))
    monkeypatch.setattr(incluster, "SERVICE_CERT_FILENAME", str(tmp_path / "ca.crt"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    assert CredentialSettings().resolved_mode() == "in-cluster"
    cfg = build_configuration(CredentialSettings(mode="auto"))
    assert cfg.host == "https://10.0.0.1:443"
    assert (bearer_header(cfg) or "").lower() == "bearer sa-token-123"
    backend = KubeRayBackend()
    assert backend.dashboard_mode() == "service"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    assert backend.dashboard_mode() == "apiserver-proxy"
    with pytest.raises(BackendError, match="service account"):
        build_configuration(CredentialSettings(mode="in-cluster"))


def test_secrets_never_reach_logs_errors_or_answers(
    aws: str,
    eks_cluster: dict[str, Any],
    fakekube: FakeKubeServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """EKS credentials end to end: the fake API server accepts only the minted token."""
    caplog.set_level(logging.DEBUG)
    backend = KubeRayBackend(
        credentials="eks",
        eks_cluster_name=eks_cluster["name"],
        eks_region=REGION,
        aws_endpoint_urls={"eks": aws, "sts": aws},
        dashboard_access="apiserver-proxy",
    )
    try:
        cfg = backend.api.configuration
        header = bearer_header(cfg) or ""
        token = header.split(" ", 1)[1]
        cfg.host = fakekube.url  # the EKS endpoint is not reachable from a test; the fake is
        fakekube.tokens = {token}
        texts: list[str] = []
        spec = resolve_cluster_spec({"name": "demo", "profile": "cpu-small"}, DEFAULT_PROFILES)
        texts.append(json.dumps(backend.create_cluster("alice", spec).to_dict()))
        texts.append(json.dumps([c.to_dict() for c in backend.list_clusters("alice")]))
        texts.append(json.dumps([e.to_dict() for e in backend.cluster_events("alice", "demo")]))
        texts.append(backend.connection_address("alice", "demo"))
        fakekube.inject_error(403, count=1, method="POST", path="rayclusters")
        fakekube.inject_error(500, count=1, method="GET", path="rayclusters/demo$")
        for call in (
            lambda: backend.create_cluster("alice", resolve_cluster_spec({"name": "two"}, DEFAULT_PROFILES)),
            lambda: backend.scale_cluster_request(
                "alice", "demo", {"workerGroups": [{"groupName": "cpu", "replicas": 2}]}, None
            ),
        ):
            with pytest.raises(BackendError) as info:
                call()
            texts.append(str(info.value))
            texts.append(repr(info.value))
        fakekube.tokens = {"another-token"}  # the API server stops accepting ours: 401s everywhere
        fakekube.drop_watches()
        with pytest.raises(BackendError) as info:
            backend.scale_cluster_request(
                "alice", "demo", {"workerGroups": [{"groupName": "cpu", "replicas": 2}]}, None
            )
        texts.append(str(info.value))
        assert "denied" in str(info.value)
        assert backend.dashboard_request_headers("alice", "demo") == {
            "Authorization": header
        }  # for the proxy only
    finally:
        backend.close()
    secrets = {"token": token, "token body": token[len("k8s-aws-v1.") :][:40], "secret key": SECRET_KEY}
    url = decode_token(header)
    secrets["signature"] = dict(parse_qsl(urlsplit(url).query))["X-Amz-Signature"]
    logged = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    for what, secret in secrets.items():
        assert secret not in logged, f"{what} in the logs"
        for text in texts:
            assert secret not in text, f"{what} in an answer or error: {text[:200]}"
