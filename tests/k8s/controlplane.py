"""A real Kubernetes control plane on loopback, for the ``k8s`` tests and by hand.

etcd, kube-apiserver (TLS, static admin token, RBAC), kube-controller-manager (garbage
collector, service accounts, endpoints, ...), kube-scheduler, KWOK (fake nodes with cpu,
memory and GPU capacity; the pod life cycle) and the KubeRay operator out of cluster, each a
child process stopped by PID. Pod IPs come from a loopback range, so nothing on this machine
ever tries to reach a pod anywhere else.
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .build import Binaries, binaries
from .pki import Pki, make_pki
from .processes import Process, free_port, wait_for

KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
POD_CIDR = "127.64.0.1/12"  # loopback: an address no pod really has is never someone else's host
SERVICE_CIDR = "10.96.0.0/16"  # allocated only, never connected to
# After draining its requests the API server lingers ~15 s in shutdown hooks here; it has
# stopped serving by then, so waiting longer proves nothing.
APISERVER_STOP_SECONDS = 3.0


def shared_crd_dir() -> Path:
    from tests.fakekube.schema import DEFAULT_CRD_DIR

    return Path(DEFAULT_CRD_DIR)


@dataclass(frozen=True)
class NodeSpec:
    name: str
    cpu: str = "16"
    memory: str = "64Gi"
    gpu: int = 0
    pods: int = 110
    labels: dict[str, str] = field(default_factory=dict)


# Labelled as Karpenter and EKS managed node groups label theirs: pods are priced by them.
DEFAULT_NODES = (
    NodeSpec(
        "kwok-cpu-0",
        labels={"node.kubernetes.io/instance-type": "m5.4xlarge", "karpenter.sh/capacity-type": "on-demand"},
    ),
    NodeSpec(
        "kwok-cpu-1",
        labels={"node.kubernetes.io/instance-type": "m5.4xlarge", "eks.amazonaws.com/capacityType": "SPOT"},
    ),
    NodeSpec(
        "kwok-gpu-0",
        memory="128Gi",
        gpu=4,
        labels={"nvidia.com/gpu.present": "true", "node.kubernetes.io/instance-type": "g5.12xlarge"},
    ),
)


class ControlPlane:
    """Start with :meth:`start` (or ``with``); everything lives in ``workdir``."""

    def __init__(
        self,
        workdir: Path | None = None,
        nodes: Iterable[NodeSpec] = DEFAULT_NODES,
        bins: Binaries | None = None,
        operator: bool = True,
        crd_dir: Path | None = None,
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="eksray-k8s-"))
        self.log_dir = self.workdir / "logs"
        self.nodes = tuple(nodes)
        self.bins = bins or binaries()
        self.with_operator = operator
        self.crd_dir = crd_dir or shared_crd_dir()
        self.admin_token = secrets.token_hex(24)
        self.etcd_port = free_port()
        self.apiserver_port = free_port()
        self.server = f"https://127.0.0.1:{self.apiserver_port}"
        self.pki: Pki | None = None
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self.processes: dict[str, Process] = {}
        self._admin: Any = None

    # --- life cycle --------------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> ControlPlane:
        if not self.bins.complete():
            raise RuntimeError(
                f"The control plane's binaries are not built in {self.bins.directory}: run `make k8s-bin` "
                "(or `python -m tests.k8s build`)."
            )
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self.pki = make_pki(self.workdir / "pki")
            (self.workdir / "tokens.csv").write_text(
                f"{self.admin_token},eksray-test-admin,admin,system:masters\n"
            )
            self.kubeconfig.write_text(self.kubeconfig_yaml(self.admin_token, "admin"))
            self.kubeconfig.chmod(0o600)
            self._start_etcd()
            self._start_apiserver()
            self._install_crds()
            self._start_controller_manager()
            self._start_scheduler()
            self._start_kwok()
            if self.with_operator:
                self._start_operator()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        for name in (
            "ray-operator",
            "kwok",
            "kube-scheduler",
            "kube-controller-manager",
            "kube-apiserver",
            "etcd",
        ):
            process = self.processes.pop(name, None)
            if process is not None:
                process.stop(timeout=APISERVER_STOP_SECONDS if name == "kube-apiserver" else 15.0)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.processes.items() if p.pid is not None}

    # --- clients -----------------------------------------------------------------------------

    def kubeconfig_yaml(self, token: str, user: str) -> str:
        assert self.pki is not None
        ca = base64.b64encode(self.pki.ca_cert.read_bytes()).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "eksray-test", "cluster": {"server": self.server, "certificate-authority-data": ca}}
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": user, "context": {"cluster": "eksray-test", "user": user}}],
            "current-context": user,
        }
        return yaml.safe_dump(config)

    def write_kubeconfig(self, path: Path, token: str, user: str = "user") -> Path:
        path.write_text(self.kubeconfig_yaml(token, user))
        path.chmod(0o600)
        return path

    def api_client(self, token: str | None = None) -> Any:
        import kubernetes.client

        assert self.pki is not None
        configuration = kubernetes.client.Configuration()
        configuration.host = self.server
        configuration.ssl_ca_cert = str(self.pki.ca_cert)
        configuration.api_key = {"authorization": f"Bearer {token or self.admin_token}"}
        return kubernetes.client.ApiClient(configuration)

    @property
    def admin(self) -> Any:
        """One shared admin ``ApiClient`` (closed by :meth:`stop`), for tests' checks."""
        if self._admin is None:
            self._admin = self.api_client()
        return self._admin

    def _get(self, path: str) -> tuple[int, bytes]:
        """A GET as the admin without the client library (the API server may not be up yet)."""
        import ssl

        assert self.pki is not None
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        request = urllib.request.Request(
            self.server + path, headers={"Authorization": f"Bearer {self.admin_token}"}
        )
        try:
            with urllib.request.urlopen(request, context=context, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def service_account_token(self, namespace: str, name: str, seconds: int = 3600) -> str:
        """A bearer token for ServiceAccount ``namespace/name`` from the TokenRequest API (the
        ServiceAccount is created if missing)."""
        import kubernetes.client

        core = kubernetes.client.CoreV1Api(self.admin)
        try:
            core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
        except kubernetes.client.ApiException as e:
            if e.status != 409:
                raise
        request = {"spec": {"audiences": [], "expirationSeconds": seconds}}
        answer = core.create_namespaced_service_account_token(name, namespace, request)
        return str(answer.status.token)

    def apply(self, objects: list[dict[str, Any]]) -> None:
        """Create objects as the admin (namespaces, RBAC, ...); one that exists is left as it is."""
        import kubernetes.utils

        for obj in objects:
            try:
                kubernetes.utils.create_from_dict(self.admin, obj)
            except kubernetes.utils.FailToCreateError as e:
                if any(getattr(x, "status", 0) != 409 for x in e.api_exceptions):
                    raise

    # --- faults the tests drive --------------------------------------------------------------

    def restart_apiserver(self) -> None:
        """Stop the API server (every watch drops) and start it again on the same port."""
        self.processes.pop("kube-apiserver").stop(timeout=APISERVER_STOP_SECONDS)
        self._start_apiserver()

    def etcd_revision(self) -> int:
        answer = self._etcd("/v3/kv/range", {"key": base64.b64encode(b"/").decode(), "limit": 1})
        return int(answer["header"]["revision"])

    def compact_etcd(self) -> int:
        """Compact etcd up to its current revision, as the API server's periodic compaction
        does; returns that revision. Watches from before it can only get 410 Gone."""
        revision = self.etcd_revision()
        self._etcd("/v3/kv/compaction", {"revision": revision, "physical": True})
        return revision

    # --- components --------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Process:
        process = Process(name, argv, self.log_dir, env).start()
        self.processes[name] = process
        return process

    def _etcd(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.etcd_port}{path}", data=json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def _start_etcd(self) -> None:
        url = f"http://127.0.0.1:{self.etcd_port}"
        peer = f"http://127.0.0.1:{free_port()}"
        process = self._spawn(
            "etcd",
            [
                self.bins.path("etcd"),
                "--name=eksray-test",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={url}",
                f"--advertise-client-urls={url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=eksray-test={peer}",
                "--unsafe-no-fsync",  # test data: durability across power loss is not the point
                "--log-level=warn",
            ],
        )

        def healthy() -> bool:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                return json.loads(response.read()).get("health") == "true"

        wait_for(healthy, "etcd healthy", process)

    def _start_apiserver(self) -> None:
        assert self.pki is not None
        process = self._spawn(
            "kube-apiserver",
            [
                self.bins.path("kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.apiserver_port}",
                f"--tls-cert-file={self.pki.serving_cert}",
                f"--tls-private-key-file={self.pki.serving_key}",
                f"--token-auth-file={self.workdir / 'tokens.csv'}",
                f"--client-ca-file={self.pki.ca_cert}",
                "--authorization-mode=RBAC",
                f"--service-account-issuer={self.server}",
                f"--service-account-key-file={self.pki.sa_public_key}",
                f"--service-account-signing-key-file={self.pki.sa_private_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
            ],
        )
        wait_for(lambda: self._get("/readyz")[0] == 200, "kube-apiserver ready", process)

    def _install_crds(self) -> None:
        import kubernetes.client

        documents = [yaml.safe_load(path.read_text()) for path in sorted(self.crd_dir.glob("*.yaml"))]
        api = kubernetes.client.ApiextensionsV1Api(self.admin)
        for crd in documents:
            try:
                api.create_custom_resource_definition(crd)
            except kubernetes.client.ApiException as e:
                if e.status != 409:
                    raise

        def established() -> bool:
            for crd in documents:
                status = api.read_custom_resource_definition(crd["metadata"]["name"]).status
                if not any(c.type == "Established" and c.status == "True" for c in status.conditions or []):
                    return False
            return True

        wait_for(established, "KubeRay CRDs established", self.processes["kube-apiserver"], timeout=60)

    def _start_controller_manager(self) -> None:
        assert self.pki is not None
        process = self._spawn(
            "kube-controller-manager",
            [
                self.bins.path("kube-controller-manager"),
                f"--kubeconfig={self.kubeconfig}",
                "--secure-port=0",
                "--leader-elect=false",
                f"--service-account-private-key-file={self.pki.sa_private_key}",
                f"--root-ca-file={self.pki.ca_cert}",
                "--use-service-account-credentials=false",
                "--v=1",
            ],
        )
        import kubernetes.client

        core = kubernetes.client.CoreV1Api(self.admin)
        # The service-account controller has run once it made the default namespace's account.
        wait_for(
            lambda: core.read_namespaced_service_account("default", "default"),
            "kube-controller-manager running",
            process,
        )

    def _start_scheduler(self) -> None:
        port = free_port()
        process = self._spawn(
            "kube-scheduler",
            [
                self.bins.path("kube-scheduler"),
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                # One scheduler: with leader election it would exit when a restarted API server
                # keeps it from renewing its lease (a kubelet would restart it; nothing here does).
                "--leader-elect=false",
                "--v=1",
            ],
        )

        def healthy() -> bool:
            import ssl

            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # its own self-signed serving certificate
            with urllib.request.urlopen(
                f"https://127.0.0.1:{port}/healthz", context=context, timeout=2
            ) as response:
                return response.status == 200

        wait_for(healthy, "kube-scheduler healthy", process)

    def _start_kwok(self) -> None:
        port = free_port()
        process = self._spawn(
            "kwok",
            [
                self.bins.path("kwok"),
                f"--kubeconfig={self.kubeconfig}",
                f"--config={self.bins.kwok_stages}",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                f"--cidr={POD_CIDR}",
                "--node-ip=127.0.0.1",
                f"--node-port={port}",
                f"--server-address=127.0.0.1:{port}",
                "--node-lease-duration-seconds=40",
            ],
        )
        self._add_nodes(process)

    def _add_nodes(self, process: Process) -> None:
        """The KWOK-managed nodes, created with their capacity; waits until KWOK has them Ready."""
        import kubernetes.client

        core = kubernetes.client.CoreV1Api(self.admin)
        for node in self.nodes:
            capacity = {"cpu": node.cpu, "memory": node.memory, "pods": str(node.pods)}
            if node.gpu:
                capacity["nvidia.com/gpu"] = str(node.gpu)
            labels = {
                "kubernetes.io/hostname": node.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                **node.labels,
            }
            annotations = {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"}
            core.create_node(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": node.name, "annotations": annotations, "labels": labels},
                    "status": {"capacity": capacity, "allocatable": capacity},
                }
            )
        names = {node.name for node in self.nodes}

        def all_ready() -> bool:
            ready = {
                n.metadata.name
                for n in core.list_node().items
                if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
            }
            return names <= ready

        wait_for(all_ready, "KWOK nodes Ready", process)

    def _start_operator(self) -> None:
        probe = free_port()
        process = self._spawn(
            "ray-operator",
            [
                self.bins.path("ray-operator"),
                "--metrics-addr=0",
                f"--health-probe-bind-address=127.0.0.1:{probe}",
                "--enable-leader-election=false",
                "--log-stdout-encoder=console",
            ],
            env={"KUBECONFIG": str(self.kubeconfig)},
        )

        def ready() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{probe}/readyz", timeout=2) as response:
                return response.status == 200

        wait_for(ready, "KubeRay operator ready", process)
