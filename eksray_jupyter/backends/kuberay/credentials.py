"""How the backend authenticates to the Kubernetes API: kubeconfig, in-cluster, or EKS.

EKS mode needs no aws CLI: the cluster's endpoint and CA come from ``eks:DescribeCluster``
and the bearer token is what ``aws eks get-token`` prints — ``k8s-aws-v1.`` followed by
the base64url (no padding) of an STS ``GetCallerIdentity`` URL presigned for 60 s with
the ``x-k8s-aws-id: <cluster>`` header signed. EKS accepts such a token for 15 minutes;
we mint a new one every ``refresh_seconds`` (10 min) through the client's
``refresh_api_key_hook``, so long-lived watches and servers keep working.

Secrets stay in the client configuration: nothing here logs or raises a token, an AWS
key or a presigned URL.
"""

from __future__ import annotations

import base64
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...core.errors import BackendError

if TYPE_CHECKING:
    import kubernetes.client

TOKEN_PREFIX = "k8s-aws-v1."
CLUSTER_ID_HEADER = "x-k8s-aws-id"
PRESIGN_SECONDS = 60


def in_cluster() -> bool:
    """Whether this process runs in a Kubernetes pod (the API server's env vars are set)."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST") and os.environ.get("KUBERNETES_SERVICE_PORT"))


@dataclass(frozen=True)
class CredentialSettings:
    mode: str = "auto"  # auto | kubeconfig | in-cluster | eks
    kubeconfig: str = ""
    context: str = ""
    eks_cluster_name: str = ""
    eks_region: str = ""
    aws_profile: str = ""
    aws_endpoint_urls: Mapping[str, str] = field(default_factory=dict)
    token_refresh_seconds: float = 600.0
    verify_ssl: bool = True

    def resolved_mode(self) -> str:
        if self.mode != "auto":
            return self.mode
        if self.eks_cluster_name:
            return "eks"
        return "in-cluster" if in_cluster() else "kubeconfig"


_minting = threading.local()
_filter_lock = threading.Lock()


class _NoSigningDetails(logging.Filter):
    """Drops botocore's DEBUG lines (canonical request, signature) while a token is minted:
    together they are the token."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_minting, "active", False)


def _quiet_signer() -> None:
    with _filter_lock:
        signer_log = logging.getLogger("botocore.auth")
        if not any(isinstance(f, _NoSigningDetails) for f in signer_log.filters):
            signer_log.addFilter(_NoSigningDetails())


class EKSTokenSource:
    """Bearer tokens for one EKS cluster, minted from the default AWS credential chain."""

    def __init__(
        self,
        cluster_name: str,
        sts_client: Any,
        refresh_seconds: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cluster_name = cluster_name
        self.refresh_seconds = refresh_seconds
        self._sts = sts_client
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._minted_at = 0.0
        # Signed, so the token is only valid for this cluster.
        sts_client.meta.events.register("before-sign.sts.GetCallerIdentity", self._add_cluster_header)

    def _add_cluster_header(self, request: Any, **_kwargs: Any) -> None:
        request.headers[CLUSTER_ID_HEADER] = self.cluster_name

    def mint(self) -> str:
        """A fresh token (no caching)."""
        _quiet_signer()
        _minting.active = True
        try:
            url = self._sts.generate_presigned_url(
                "get_caller_identity", Params={}, ExpiresIn=PRESIGN_SECONDS, HttpMethod="GET"
            )
        except Exception as e:  # botocore: no credentials, bad profile...
            raise BackendError(
                f"Cannot sign an EKS token for cluster {self.cluster_name!r}: {type(e).__name__}. "
                "Check the AWS credentials of the Jupyter server (role, profile or environment)."
            ) from None  # the botocore message may echo the profile's settings; keep it out
        finally:
            _minting.active = False
        encoded = base64.urlsafe_b64encode(url.encode("utf-8")).decode("ascii").rstrip("=")
        return TOKEN_PREFIX + encoded

    def token(self) -> str:
        """The current token, minted again once it is ``refresh_seconds`` old."""
        with self._lock:
            now = self._clock()
            if self._token is None or now - self._minted_at >= self.refresh_seconds:
                self._token = self.mint()
                self._minted_at = now
            return self._token

    def refresh_hook(self, configuration: kubernetes.client.Configuration) -> None:
        """``Configuration.refresh_api_key_hook``: called before every request, cheap when fresh."""
        configuration.api_key["BearerToken"] = self.token()
        configuration.api_key_prefix["BearerToken"] = "Bearer"


def _aws_session(settings: CredentialSettings) -> Any:
    import boto3

    try:
        return boto3.session.Session(
            profile_name=settings.aws_profile or None, region_name=settings.eks_region or None
        )
    except Exception as e:  # ProfileNotFound and friends
        raise BackendError(f"Cannot create an AWS session ({type(e).__name__}); check the AWS profile") from e


def eks_configuration(settings: CredentialSettings) -> tuple[kubernetes.client.Configuration, EKSTokenSource]:
    """Endpoint + CA from DescribeCluster, and a self-refreshing bearer token."""
    import kubernetes.client

    if not settings.eks_cluster_name or not settings.eks_region:
        raise BackendError("EKS credentials need both KubeRayBackend.eks_cluster_name and eks_region")
    session = _aws_session(settings)
    endpoints = settings.aws_endpoint_urls
    eks = session.client("eks", region_name=settings.eks_region, endpoint_url=endpoints.get("eks") or None)
    try:
        described = eks.describe_cluster(name=settings.eks_cluster_name)["cluster"]
    except Exception as e:
        code = getattr(e, "response", {}).get("Error", {}).get("Code", type(e).__name__)
        raise BackendError(
            f"Cannot describe EKS cluster {settings.eks_cluster_name!r} in {settings.eks_region} ({code})"
        ) from e
    endpoint = described.get("endpoint")
    ca = (described.get("certificateAuthority") or {}).get("data")
    if not endpoint or not ca:
        raise BackendError(f"EKS cluster {settings.eks_cluster_name!r} has no endpoint yet (is it ACTIVE?)")
    sts = session.client("sts", region_name=settings.eks_region, endpoint_url=endpoints.get("sts") or None)
    source = EKSTokenSource(settings.eks_cluster_name, sts, settings.token_refresh_seconds)
    cfg = kubernetes.client.Configuration()
    cfg.host = endpoint
    try:
        authority = base64.b64decode(ca)
    except ValueError as e:
        raise BackendError(f"EKS cluster {settings.eks_cluster_name!r} has an unreadable CA") from e
    # EKS sends a base64 PEM; anything else is handed to ssl as DER.
    cfg.ca_cert_data = authority.decode("ascii") if authority.startswith(b"-----BEGIN") else authority
    cfg.verify_ssl = settings.verify_ssl
    cfg.refresh_api_key_hook = source.refresh_hook
    source.refresh_hook(cfg)  # fail now, not on the first request, if signing is impossible
    return cfg, source


def build_configuration(settings: CredentialSettings) -> kubernetes.client.Configuration:
    """A client Configuration for the configured mode (imports kubernetes/boto3 here, lazily)."""
    import kubernetes.client
    import kubernetes.config

    mode = settings.resolved_mode()
    if mode == "eks":
        return eks_configuration(settings)[0]
    cfg = kubernetes.client.Configuration()
    if mode == "in-cluster":
        try:
            # Re-reads the projected service-account token as kubelet rotates it.
            kubernetes.config.load_incluster_config(client_configuration=cfg)
        except kubernetes.config.ConfigException as e:
            raise BackendError(f"Not running in a Kubernetes pod with a service account: {e}") from e
        return cfg
    if mode != "kubeconfig":
        raise BackendError(f"Unknown credentials mode {mode!r}; use kubeconfig, in-cluster, eks or auto")
    try:
        kubernetes.config.load_kube_config(
            config_file=settings.kubeconfig or None,
            context=settings.context or None,
            client_configuration=cfg,
            persist_config=False,
        )
    except (kubernetes.config.ConfigException, OSError) as e:
        where = settings.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise BackendError(f"Cannot load the kubeconfig {where}: {type(e).__name__}: {e}") from e
    if not settings.verify_ssl:
        cfg.verify_ssl = False
    return cfg


def bearer_header(cfg: kubernetes.client.Configuration) -> str | None:
    """The ``Authorization`` value the client would send now (refreshed), or None."""
    value = cfg.get_api_key_with_prefix("BearerToken", alias="authorization")
    return str(value) if value else None


def ssl_context(cfg: kubernetes.client.Configuration) -> ssl.SSLContext | None:
    """TLS settings to reach the API server as the client does (CA, client certificate); None over http."""
    if not str(cfg.host).startswith("https://"):
        return None
    if not cfg.verify_ssl:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None, cadata=cfg.ca_cert_data or None)
    if cfg.cert_file:
        context.load_cert_chain(cfg.cert_file, cfg.key_file or None)
    return context
