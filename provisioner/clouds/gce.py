"""Google Compute Engine through libcloud's GCE driver (auth, transport, error parsing, operation
polling), with the compute v1 request bodies written here so that labels, network tags, local SSD
interfaces and device names are set in the one insert call.

Credentials: an OAuth access token (`token=` / env PROVISION_GCE_TOKEN, e.g. from
`gcloud auth print-access-token`) or a service-account JSON file (GOOGLE_APPLICATION_CREDENTIALS,
libcloud's own service-account flow). Endpoint override: `endpoint=` / env PROVISION_GCE_ENDPOINT.
GCE firewalls cannot carry labels: ours are named "provisioner-<stack>-<host>-{ssh,ports}" and carry
"provisioner stack=<stack> host=<host>" as their description, which is what `find` matches.

Network: each stack gets its own VPC network, "provisioner-<stack>" (auto mode, description
"provisioner stack=<stack>"), whose only ingress rules are the stack's firewalls. A project's
`default` network comes with default-allow-ssh (0.0.0.0/0 on 22) and default-allow-internal, which
would make the stack's SSH range meaningless; it is used only when a host names it (`network:
default`), as is any other network a host names. Disks take a customer-managed key (CMEK) from
`kms_key` (root_disk and volumes).
"""
from __future__ import annotations

import json
import os
import re
from urllib.parse import urlsplit

from libcloud.common.base import ConnectionUserAndKey
from libcloud.compute.drivers.gce import GCEConnection, GCENodeDriver

from ..errors import ConfigError
from .base import TAG_HOST, TAG_STACK, TAG_VOLUME, HostPlan, LaunchPlan, Resource, VolumePlan
from .errors import CloudAuthError, CloudError, CloudInvalid, CloudNotFound, CloudQuotaError, provider_call
from .retry import poll, retry

API = "https://www.googleapis.com/compute/v1"
TAG_SNAPSHOT = "provisioner-snapshot"   # label on a snapshot: its name (the btrfs snapshot's, lowercased)
_FW_DESC = re.compile(r"provisioner stack=(\S+) host=(\S+)")
_NET_DESC = re.compile(r"provisioner stack=(\S+)")
_STATE = {"PROVISIONING": "pending", "STAGING": "pending", "RUNNING": "running", "STOPPING": "stopping",
          "SUSPENDING": "stopping", "SUSPENDED": "stopped", "TERMINATED": "stopped", "REPAIRING": "pending"}


class _StaticToken:
    """Stands in for libcloud's GoogleOAuth2Credential when the caller already has a token."""

    def __init__(self, token: str):
        self.access_token = token


class _Connection(GCEConnection):
    # libcloud's base driver passes host and port positionally after `secure`, where GCEConnection
    # expects auth_type: accept them here, so an endpoint override reaches the connection.
    def __init__(self, user_id, key, secure=True, host=None, port=None, auth_type=None, credential_file=None,
                 project=None, access_token=None, poll_interval=None, **kwargs):
        if host is not None:
            kwargs["host"] = host
        if port is not None:
            kwargs["port"] = port
        if access_token is None:
            super().__init__(user_id, key, secure, auth_type=auth_type, credential_file=credential_file,
                             project=project, **kwargs)
        else:
            # Skip the OAuth dance (which would contact Google's token endpoint): use the token given.
            kwargs.pop("scopes", None)
            ConnectionUserAndKey.__init__(self, user_id, key, secure=secure, **kwargs)
            self.oauth2_credential = _StaticToken(access_token)
            self.request_path = f"/compute/v1/projects/{project}"
            self.gce_params = None
        if poll_interval is not None:
            self.poll_interval = poll_interval


class _Driver(GCENodeDriver):
    connectionCls = _Connection

    def __init__(self, *args, access_token=None, poll_interval=None, **kwargs):
        self._access_token = access_token
        self._poll_interval = poll_interval
        super().__init__(*args, **kwargs)

    def _ex_connection_class_kwargs(self):
        kw = super()._ex_connection_class_kwargs()
        kw.update(access_token=self._access_token, poll_interval=self._poll_interval)
        return kw


def _label_value(text: str) -> str:
    """A GCE label value / name part: lowercase letters, digits, '-' (at most 63)."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63] or "snapshot"


def image_url(image: str, project: str) -> str:
    """An image reference as the API wants it: full URL, projects/P/global/images/..., family/F or NAME."""
    if image.startswith("https://"):
        return image
    if image.startswith("projects/"):
        return f"{API}/{image}"
    if image.startswith("family/"):
        return f"{API}/projects/{project}/global/images/{image}"
    return f"{API}/projects/{project}/global/images/{image}"


class GceCloud:
    name = "gce"

    def __init__(self, project: str | None = None, *, endpoint: str | None = None, token: str | None = None,
                 credentials_file: str | None = None, sleep=None, poll_interval: float | None = None):
        project = project or os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("CLOUDSDK_CORE_PROJECT")
        if not project:
            raise ConfigError("gce: no project: pass --project or set GOOGLE_CLOUD_PROJECT")
        token = token or os.environ.get("PROVISION_GCE_TOKEN")
        credentials_file = credentials_file or os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
        user_id, key = "provisioner", ""
        if not token:
            if not credentials_file:
                raise CloudAuthError("gce: no credentials: set PROVISION_GCE_TOKEN (an OAuth access token) or "
                                     "GOOGLE_APPLICATION_CREDENTIALS (a service-account JSON file)")
            try:
                user_id, key = json.loads(open(credentials_file).read())["client_email"], credentials_file
            except (OSError, ValueError, KeyError) as exc:
                raise CloudAuthError(f"gce: cannot use service-account file {credentials_file}: {exc}") from None
        kw = {}
        endpoint = endpoint or os.environ.get("PROVISION_GCE_ENDPOINT")
        if endpoint:
            u = urlsplit(endpoint if "://" in endpoint else "https://" + endpoint)
            if u.scheme not in ("http", "https") or not u.hostname:
                raise ConfigError(f"gce: endpoint {endpoint!r} is not an http(s) URL")
            kw = {"host": u.hostname, "port": u.port or (443 if u.scheme == "https" else 80),
                  "secure": u.scheme == "https"}
        self.project = project
        self.sleep = sleep
        self._retry_kw = {"sleep": sleep} if sleep else {}
        if not token:
            # libcloud caches the service account's access token in a file: keep it in our config dir
            from .keys import config_dir

            cache = config_dir() / "gce" / f"token-{project}.json"
            cache.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            kw.update(auth_type="SA", credential_file=str(cache))
        with provider_call("gce", "authenticate"):
            self.driver = _Driver(user_id, key, project=project, access_token=token,
                                  poll_interval=poll_interval, **kw)

    # -- plumbing --------------------------------------------------------------------------------
    def _get(self, path: str, what: str, params: dict | None = None) -> dict:
        def once():
            with provider_call("gce", what):
                return self.driver.connection.request(path, method="GET", params=params).object
        return retry(once, **self._retry_kw)

    def _mutate(self, method: str, path: str, what: str, body: dict | None = None) -> dict:
        """A call that returns an Operation; libcloud polls it until DONE (errors raise)."""
        def once():
            with provider_call("gce", what):
                return self.driver.connection.async_request(path, method=method, data=body).object
        return retry(once, **self._retry_kw)

    def _z(self, zone: str) -> str:
        return f"{API}/projects/{self.project}/zones/{zone}"

    # -- checks ----------------------------------------------------------------------------------
    def check(self, plan: LaunchPlan) -> None:
        for hp in plan.hosts:
            s = hp.settings
            try:
                self._get(f"/zones/{s.zone}", "check zone")
            except CloudNotFound:
                raise CloudInvalid(f"gce: host {hp.host}: unknown zone {s.zone!r} in project {self.project}") from None
            try:
                self._get(f"/zones/{s.zone}/machineTypes/{s.instance_type}", "check machine type")
            except CloudNotFound:
                raise CloudInvalid(f"gce: host {hp.host}: unknown machine type {s.instance_type!r} in "
                                   f"{s.zone}") from None
            try:
                self._get(image_url(s.image, self.project), "check image")
            except CloudNotFound:
                raise CloudNotFound(f"gce: host {hp.host}: unknown image {s.image!r}") from None
            if s.network:
                self._get(f"/global/networks/{s.network}", f"check network {s.network}")

    # -- create ----------------------------------------------------------------------------------
    def import_key(self, plan: LaunchPlan) -> None:
        return None  # GCE: the key goes into each instance's metadata (ssh-keys); nothing to create

    @staticmethod
    def stack_network(stack: str) -> str:
        return f"provisioner-{stack}"

    def _network(self, hp: HostPlan) -> str:
        name = hp.settings.network or self.stack_network(hp.stack)
        return f"{API}/projects/{self.project}/global/networks/{name}"

    def prepare(self, plan: LaunchPlan, existing: list[Resource]) -> list[Resource]:
        """The stack's own network, unless every host names one (or it exists: a host replaced
        alongside the others). Returns what it created."""
        name = self.stack_network(plan.stack)
        if all(hp.settings.network for hp in plan.hosts) or any(r.kind == "network" for r in existing):
            return []
        body = {"name": name, "autoCreateSubnetworks": True, "description": f"provisioner stack={plan.stack}"}
        self._mutate("POST", "/global/networks", f"create network {name}", body)
        return [Resource("network", name, name)]

    def create_firewall(self, hp: HostPlan) -> Resource:
        network = self._network(hp)
        groups: dict[str, dict] = {}
        for r in hp.rules:
            g = groups.setdefault(r.cidr, {})
            g.setdefault(r.protocol, []).append(str(r.first) if r.first == r.last else f"{r.first}-{r.last}")
        made = []
        res = Resource("firewall", "", "", hp.host, extra={"names": made})
        try:
            for cidr, protos in sorted(groups.items(), key=lambda kv: kv[0] == "0.0.0.0/0"):
                suffix = "ports" if cidr == "0.0.0.0/0" else "ssh"
                name = f"provisioner-{hp.resource_name}-{suffix}"
                body = {"name": name, "description": f"provisioner stack={hp.stack} host={hp.host}",
                        "network": network, "direction": "INGRESS", "priority": 1000,
                        "sourceRanges": [cidr], "targetTags": [hp.resource_name],
                        "allowed": [{"IPProtocol": p, "ports": ports} for p, ports in sorted(protos.items())]}
                self._mutate("POST", "/global/firewalls", f"create firewall {name}", body)
                made.append(name)
        except CloudError:
            self.delete(res)
            raise
        res.id = res.name = made[0]
        return res

    def _instance_body(self, hp: HostPlan, preemptible: bool) -> dict:
        s, z = hp.settings, hp.settings.zone
        boot = {"boot": True, "autoDelete": True, "type": "PERSISTENT", "mode": "READ_WRITE", "deviceName": "root",
                "initializeParams": {"sourceImage": image_url(s.image, self.project), "labels": hp.tags}}
        if s.root_disk.kms_key:
            boot["diskEncryptionKey"] = {"kmsKeyName": s.root_disk.kms_key}
        if s.root_disk.size_gb:
            boot["initializeParams"]["diskSizeGb"] = str(s.root_disk.size_gb)
        if s.root_disk.type:
            boot["initializeParams"]["diskType"] = f"{self._z(z)}/diskTypes/{s.root_disk.type}"
        disks = [boot]
        for i in range(hp.ephemeral_count):
            disks.append({"type": "SCRATCH", "autoDelete": True, "mode": "READ_WRITE",
                          "interface": (hp.ephemeral_interface or "nvme").upper(), "deviceName": f"local-ssd-{i}",
                          "initializeParams": {"diskType": f"{self._z(z)}/diskTypes/local-ssd"}})
        nic = {"network": self._network(hp),
               "accessConfigs": [{"type": "ONE_TO_ONE_NAT", "name": "External NAT"}]}
        if s.subnet:
            nic["subnetwork"] = f"{API}/projects/{self.project}/regions/{s.region}/subnetworks/{s.subnet}"
        body = {"name": hp.resource_name, "machineType": f"{self._z(z)}/machineTypes/{s.instance_type}",
                "labels": {**hp.tags, "provisioner-market": "spot" if preemptible else "on-demand"},
                "tags": {"items": [hp.resource_name]}, "disks": disks, "networkInterfaces": [nic],
                "metadata": {"items": [{"key": "user-data", "value": hp.user_data},
                                       {"key": "ssh-keys", "value": f"provisioner:{hp.ssh_public_key}"}]}}
        if s.identity and s.identity.get("service_account"):
            # the host's pulls from Artifact Registry use this account's token (metadata server)
            body["serviceAccounts"] = [{"email": s.identity["service_account"], "scopes": s.identity["scopes"]}]
        if preemptible:
            body["scheduling"] = {"preemptible": True, "automaticRestart": False, "onHostMaintenance": "TERMINATE"}
        elif hp.ephemeral_count:
            body["scheduling"] = {"onHostMaintenance": "MIGRATE", "automaticRestart": True}
        return body

    def create_instance(self, hp: HostPlan, key: Resource | None, fw: Resource) -> Resource:
        pre = hp.settings.spot
        path, what = f"/zones/{hp.settings.zone}/instances", f"launch {hp.resource_name}"
        try:
            self._mutate("POST", path, what, self._instance_body(hp, pre))
        except CloudQuotaError:
            if not pre:
                raise
            pre = False  # preemptible capacity/quota: fall back to a standard VM once
            self._mutate("POST", path, what, self._instance_body(hp, False))
        return Resource("instance", hp.resource_name, hp.resource_name, hp.host, "pending",
                        {"zone": hp.settings.zone, "market": "spot" if pre else "on-demand"})

    def _instance(self, item: dict) -> Resource:
        nic = (item.get("networkInterfaces") or [{}])[0]
        zone = item.get("zone", "").rsplit("/", 1)[-1]
        labels = item.get("labels", {})
        return Resource("instance", item["name"], item["name"], labels.get(TAG_HOST["gce"]),
                        _STATE.get(item.get("status"), item.get("status", "").lower()),
                        {"zone": zone, "public_ip": ((nic.get("accessConfigs") or [{}])[0]).get("natIP"),
                         "private_ip": nic.get("networkIP"), "type": item.get("machineType", "").rsplit("/", 1)[-1],
                         "tags": labels})

    def instance_state(self, inst: Resource) -> Resource:
        from .retry import retry_consistent
        item = retry_consistent(lambda: self._get(f"/zones/{inst.extra['zone']}/instances/{inst.id}",
                                                  "describe instance"), **self._retry_kw)
        return self._instance(item)

    def create_volume(self, hp: HostPlan, vp: VolumePlan, inst: Resource) -> Resource:
        z = inst.extra["zone"]
        name = f"{hp.resource_name}-{vp.name}"
        # PDs are always encrypted at rest by Google; `encrypted: false` cannot turn that off.
        body = {"name": name, "sizeGb": str(vp.size_gb), "labels": vp.tags,
                "type": f"{self._z(z)}/diskTypes/{vp.type or 'pd-balanced'}"}
        if vp.iops:
            body["provisionedIops"] = str(vp.iops)
        if vp.kms_key:
            body["diskEncryptionKey"] = {"kmsKeyName": vp.kms_key}
        self._mutate("POST", f"/zones/{z}/disks", f"create disk {name}", body)
        return Resource("volume", name, name, hp.host, extra={"zone": z, "tags": vp.tags})

    def attach_volume(self, inst: Resource, vol: Resource, vp: VolumePlan) -> None:
        z = inst.extra["zone"]
        body = {"source": f"{self._z(z)}/disks/{vol.id}", "deviceName": vp.device, "mode": "READ_WRITE",
                "autoDelete": False, "type": "PERSISTENT"}
        self._mutate("POST", f"/zones/{z}/instances/{inst.id}/attachDisk", f"attach {vp.name}", body)

    def console_output(self, inst: Resource) -> str:
        out = self._get(f"/zones/{inst.extra['zone']}/instances/{inst.id}/serialPort", "read serial port",
                        {"port": 1})
        return out.get("contents", "")

    # -- find / delete ---------------------------------------------------------------------------
    def find(self, stack: str | None) -> list[Resource]:
        key = TAG_STACK["gce"]
        flt = f'labels.{key} = "{stack}"' if stack else f"labels.{key}:*"
        found = []
        for scope in self._get("/aggregated/instances", "find instances", {"filter": flt}).get("items", {}).values():
            found += [self._instance(i) for i in scope.get("instances", [])]
        for scope in self._get("/aggregated/disks", "find disks", {"filter": flt}).get("items", {}).values():
            for d in scope.get("disks", []):
                labels = d.get("labels", {})
                if TAG_VOLUME["gce"] not in labels:
                    continue  # a boot disk: it goes with its instance (autoDelete)
                found.append(Resource("volume", d["name"], d["name"], labels.get(TAG_HOST["gce"]),
                                      "in-use" if d.get("users") else "available",
                                      {"zone": d.get("zone", "").rsplit("/", 1)[-1], "tags": labels,
                                       "size_gb": int(d.get("sizeGb", 0)),
                                       "attached_to": [u.rsplit("/", 1)[-1] for u in d.get("users", [])]}))
        for fw in self._get("/global/firewalls", "find firewalls").get("items", []):
            m = _FW_DESC.fullmatch(fw.get("description", ""))
            if m and fw["name"].startswith("provisioner-") and (stack is None or m.group(1) == stack):
                found.append(Resource("firewall", fw["name"], fw["name"], m.group(2),
                                      extra={"names": [fw["name"]], "tags": {key: m.group(1)}}))
        for net in self._get("/global/networks", "find networks").get("items", []):
            m = _NET_DESC.fullmatch(net.get("description", ""))
            if m and net["name"] == self.stack_network(m.group(1)) and (stack is None or m.group(1) == stack):
                found.append(Resource("network", net["name"], net["name"], extra={"tags": {key: m.group(1)}}))
        return found

    def delete(self, res: Resource) -> None:
        if res.kind == "key":
            return
        if res.kind == "firewall":
            targets = [("DELETE", f"/global/firewalls/{n}") for n in res.extra.get("names") or [res.id]]
        elif res.kind == "network":
            targets = [("DELETE", f"/global/networks/{res.id}")]
        elif res.kind == "instance":
            targets = [("DELETE", f"/zones/{res.extra['zone']}/instances/{res.id}")]
        else:
            targets = [("DELETE", f"/zones/{res.extra['zone']}/disks/{res.id}")]
        for method, path in targets:
            try:
                self._mutate(method, path, f"delete {res.kind} {path.rsplit('/', 1)[-1]}")
            except CloudNotFound:
                pass  # already gone

    # -- snapshots (provision snapshot / restore) ------------------------------------------------
    def _snapshot(self, item: dict) -> Resource:
        labels = item.get("labels", {})
        src = item.get("sourceDisk", "")
        zone = src.split("/zones/", 1)[1].split("/", 1)[0] if "/zones/" in src else None
        return Resource("snapshot", item["name"], labels.get(TAG_SNAPSHOT, item["name"]), labels.get(TAG_HOST["gce"]),
                        item.get("status", "").lower() or None,
                        {"volume_id": src.rsplit("/", 1)[-1], "zone": zone, "size_gb": int(item.get("diskSizeGb", 0)),
                         "started": item.get("creationTimestamp"), "tags": labels})

    def snapshot_volume(self, volume_id: str, name: str, tags: dict[str, str], *, zone: str | None = None) -> Resource:
        """Snapshot a PD; returns once the snapshot is UPLOADING or READY, when GCE has fixed its
        point in time (Google: writes may resume then), not when the upload is done."""
        if not zone:
            raise ConfigError(f"gce: snapshot of disk {volume_id}: its zone is needed")
        label = _label_value(name)
        snap = f"{volume_id[:63 - len(label) - 1]}-{label}"
        body = {"name": snap, "labels": {**tags, TAG_SNAPSHOT: label},
                "description": f"provisioner snapshot {name} of {volume_id}"}

        def once():
            with provider_call("gce", f"snapshot disk {volume_id}"):
                return self.driver.connection.request(f"/zones/{zone}/disks/{volume_id}/createSnapshot",
                                                      method="POST", data=body).object
        retry(once, **self._retry_kw)

        def fixed():
            try:
                item = self._get(f"/global/snapshots/{snap}", f"read snapshot {snap}")
            except CloudNotFound:
                return None  # the operation has not made it yet
            if item.get("status") in ("FAILED",):
                raise CloudError(f"gce: snapshot {snap} of {volume_id} failed")
            return item if item.get("status") in ("UPLOADING", "READY") else None
        item = poll(fixed, timeout=600, interval=1, **({"sleep": self.sleep} if self.sleep else {}))
        if item is None:
            raise CloudError(f"gce: snapshot {snap} of {volume_id} not started after 600s")
        return self._snapshot(item)

    def snapshots(self, stack: str | None) -> list[Resource]:
        key = TAG_STACK["gce"]
        flt = (f'labels.{key} = "{stack}"' if stack else f"labels.{key}:*") + f" AND labels.{TAG_SNAPSHOT}:*"
        items = self._get("/global/snapshots", "find snapshots", {"filter": flt}).get("items", [])
        return sorted((self._snapshot(i) for i in items), key=lambda s: (s.extra["started"] or "", s.id))

    def delete_snapshot(self, snapshot_id: str) -> None:
        try:
            self._mutate("DELETE", f"/global/snapshots/{snapshot_id}", f"delete snapshot {snapshot_id}")
        except CloudNotFound:
            pass

    def volume_from_snapshot(self, snapshot: Resource, zone: str, tags: dict[str, str],
                             volume_type: str | None = None) -> Resource:
        """A new PD holding `snapshot` (named like the snapshot), labelled `tags`."""
        body = {"name": snapshot.id, "labels": tags,
                "sourceSnapshot": f"{API}/projects/{self.project}/global/snapshots/{snapshot.id}",
                "type": f"{self._z(zone)}/diskTypes/{volume_type or 'pd-balanced'}"}
        self._mutate("POST", f"/zones/{zone}/disks", f"create disk from {snapshot.id}", body)
        return Resource("volume", snapshot.id, snapshot.id, tags.get(TAG_HOST["gce"]), "available",
                        {"zone": zone, "tags": tags, "snapshot_id": snapshot.id})

    def wait_deleted(self, res: Resource, timeout: float) -> bool:
        def gone():
            try:
                self._get(f"/zones/{res.extra['zone']}/instances/{res.id}", "describe instance")
            except CloudNotFound:
                return True
            return False
        return bool(poll(gone, timeout=timeout, interval=2, **({"sleep": self.sleep} if self.sleep else {})))
