"""AWS EC2 through libcloud's EC2 driver (signing, transport, error parsing), plus the few raw
API calls libcloud lacks (TagSpecifications, so a resource is never untagged, not even briefly).

Emulators and other endpoints: `endpoint="http://127.0.0.1:5000"` (or env PROVISION_AWS_ENDPOINT /
AWS_ENDPOINT_URL_EC2 / AWS_ENDPOINT_URL).
"""
from __future__ import annotations

import base64
import os
import re
from urllib.parse import urlsplit
from xml.etree import ElementTree as ET

from libcloud.compute.drivers.ec2 import NAMESPACE, EC2Connection, EC2NodeDriver, EC2Response

from ..errors import ConfigError
from .base import TAG_HOST, TAG_STACK, TAG_VOLUME, HostPlan, LaunchPlan, Resource, VolumePlan
from .errors import CloudAuthError, CloudError, CloudInvalid, CloudNotFound, CloudQuotaError, provider_call
from .retry import poll, retry, retry_consistent

TAG_SNAPSHOT = "provisioner:snapshot"   # on a snapshot: its name (the btrfs snapshot's too)
_EC2_NS = re.compile(r"^\{http://ec2\.amazonaws\.com/doc/[^}]*\}")


class _Response(EC2Response):
    """moto answers in namespace '.../doc/2016-11-15' (no trailing slash) where AWS and libcloud use
    '.../doc/2016-11-15/'; libcloud's parsers then find nothing (e.g. ImportKeyPair crashes on a missing
    keyFingerprint). Normalise every EC2 namespace to libcloud's before its parsers see the tree."""

    def parse_body(self):
        root = super().parse_body()
        if isinstance(root, ET.Element):
            for el in root.iter():
                if isinstance(el.tag, str) and _EC2_NS.match(el.tag):
                    el.tag = _EC2_NS.sub("{%s}" % NAMESPACE, el.tag)
        return root

    def parse_error(self):
        # moto also puts its <Response><Errors> in that namespace, where libcloud looks for
        # un-namespaced "Errors/Error": drop the default namespace so libcloud reads code and message.
        if isinstance(self.body, (str, bytes)):
            body = self.body.decode() if isinstance(self.body, bytes) else self.body
            self.body = re.sub(r'\sxmlns="http://ec2\.amazonaws\.com/doc/[^"]*"', "", body, count=1)
        return super().parse_error()


class _Connection(EC2Connection):
    responseCls = _Response


class _Driver(EC2NodeDriver):
    connectionCls = _Connection


def _q(tag: str) -> str:
    return "/".join(f"{{{NAMESPACE}}}{p}" for p in tag.split("/"))


def _text(el, path: str, default=None):
    found = el.find(_q(path))
    return found.text if found is not None and found.text is not None else default


def _tags(el) -> dict[str, str]:
    return {_text(i, "key"): _text(i, "value", "") for i in el.findall(_q("tagSet/item"))}


def _tag_spec(params: dict, n: int, rtype: str, tags: dict[str, str]) -> None:
    params[f"TagSpecification.{n}.ResourceType"] = rtype
    for i, (k, v) in enumerate(sorted(tags.items()), 1):
        params[f"TagSpecification.{n}.Tag.{i}.Key"] = k
        params[f"TagSpecification.{n}.Tag.{i}.Value"] = v


# Pre-Nitro (Xen) families only expose instance-store disks that the launch maps explicitly; Nitro
# types attach all their NVMe instance store on their own and ignore such mappings.
_XEN_INSTANCE_STORE = {"m1", "m2", "m3", "c1", "c3", "cc2", "cr1", "hi1", "hs1", "i2", "r3", "d2", "x1", "x1e", "g2"}


def instance_store_mappings(instance_type: str, count: int) -> list[tuple[str, str]]:
    if instance_type.split(".", 1)[0] not in _XEN_INSTANCE_STORE:
        return []
    devices = [f"/dev/sd{c}" for c in "bcde"] + [f"/dev/sd{c}" for c in "qrstuvwxyz"]
    return [(devices[i], f"ephemeral{i}") for i in range(min(count, len(devices)))]


def endpoint_from_env() -> str | None:
    for var in ("PROVISION_AWS_ENDPOINT", "AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL"):
        if os.environ.get(var):
            return os.environ[var]
    return None


class AwsCloud:
    name = "aws"

    def __init__(self, region: str, *, endpoint: str | None = None, access_key: str | None = None,
                 secret_key: str | None = None, session_token: str | None = None, sleep=None):
        access_key = access_key or os.environ.get("AWS_ACCESS_KEY_ID")
        secret_key = secret_key or os.environ.get("AWS_SECRET_ACCESS_KEY")
        session_token = session_token or os.environ.get("AWS_SESSION_TOKEN")
        if not access_key or not secret_key:
            raise CloudAuthError("aws: no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        if region not in EC2NodeDriver.list_regions():
            raise ConfigError(f"aws: unknown region {region!r}")
        kw = {}
        endpoint = endpoint or endpoint_from_env()
        if endpoint:
            u = urlsplit(endpoint if "://" in endpoint else "https://" + endpoint)
            if u.scheme not in ("http", "https") or not u.hostname:
                raise ConfigError(f"aws: endpoint {endpoint!r} is not an http(s) URL")
            kw = {"host": u.hostname, "port": u.port or (443 if u.scheme == "https" else 80),
                  "secure": u.scheme == "https"}
        self.region = region
        self.sleep = sleep
        self._retry_kw = {"sleep": sleep} if sleep else {}
        self.driver = _Driver(access_key, secret_key, region=region, token=session_token,
                              signature_version="4", **kw)

    # -- plumbing ------------------------------------------------------------------------------
    def _call(self, action: str, params: dict | None = None, what: str | None = None) -> ET.Element:
        def once():
            with provider_call("aws", what or action):
                return self.driver.connection.request(self.driver.path, params={"Action": action,
                                                                                 **(params or {})}).object
        return retry(once, **self._retry_kw)

    def _filters(self, stack: str | None, extra: dict[str, list[str]] | None = None) -> dict:
        """Filters for this stack's resources (every stack's when `stack` is None)."""
        mine = {f"tag:{TAG_STACK['aws']}": [stack]} if stack else {"tag-key": [TAG_STACK["aws"]]}
        filters = {**mine, **(extra or {})}
        params = {}
        for i, (name, values) in enumerate(filters.items(), 1):
            params[f"Filter.{i}.Name"] = name
            for j, v in enumerate(values, 1):
                params[f"Filter.{i}.Value.{j}"] = v
        return params

    # -- checks (nothing created) --------------------------------------------------------------
    def check(self, plan: LaunchPlan) -> None:
        zones = {_text(z, "zoneName") for z in self._call("DescribeAvailabilityZones").findall(
            _q("availabilityZoneInfo/item"))}
        for hp in plan.hosts:
            s = hp.settings
            if s.region != self.region:
                raise ConfigError(f"host {hp.host}: region {s.region} differs from the driver's {self.region}; "
                                  "launch one region per run")
            if s.zone and s.zone not in zones:
                raise CloudInvalid(f"aws: host {hp.host}: unknown availability zone {s.zone!r} in {self.region} "
                                   f"(known: {', '.join(sorted(zones))})")
            try:
                self._call("DescribeInstanceTypes", {"InstanceType.1": s.instance_type}, "check instance type")
            except (CloudInvalid, CloudNotFound):
                raise CloudInvalid(f"aws: host {hp.host}: unknown instance type {s.instance_type!r}") from None
            try:
                imgs = self._call("DescribeImages", {"ImageId.1": s.image}, "check image").findall(
                    _q("imagesSet/item"))
            except CloudNotFound:
                imgs = []
            if not imgs:
                raise CloudNotFound(f"aws: host {hp.host}: unknown image (AMI) {s.image!r} in {self.region}")
            if s.subnet:
                self._call("DescribeSubnets", {"SubnetId.1": s.subnet}, f"check subnet {s.subnet}")

    # -- create ----------------------------------------------------------------------------------
    def import_key(self, plan: LaunchPlan) -> Resource:
        params = {"KeyName": plan.key_name,
                  "PublicKeyMaterial": base64.b64encode(plan.public_key.encode()).decode()}
        _tag_spec(params, 1, "key-pair", {TAG_STACK["aws"]: plan.stack})
        el = self._call("ImportKeyPair", params, f"import key pair {plan.key_name}")
        return Resource("key", _text(el, "keyPairId") or plan.key_name, plan.key_name,
                        extra={"fingerprint": _text(el, "keyFingerprint")})

    def create_firewall(self, hp: HostPlan) -> Resource:
        name = f"provisioner-{hp.resource_name}"
        params = {"GroupName": name, "GroupDescription": f"provisioner stack {hp.stack} host {hp.host}"}
        if hp.settings.subnet:
            sub = self._call("DescribeSubnets", {"SubnetId.1": hp.settings.subnet}).find(_q("subnetSet/item"))
            params["VpcId"] = _text(sub, "vpcId")
        _tag_spec(params, 1, "security-group", hp.tags)
        gid = _text(self._call("CreateSecurityGroup", params, f"create security group {name}"), "groupId")
        res = Resource("firewall", gid, name, hp.host)
        perms = {}
        for i, r in enumerate(hp.rules, 1):
            perms.update({f"IpPermissions.{i}.IpProtocol": r.protocol, f"IpPermissions.{i}.FromPort": str(r.first),
                          f"IpPermissions.{i}.ToPort": str(r.last), f"IpPermissions.{i}.IpRanges.1.CidrIp": r.cidr})
        try:
            self._call("AuthorizeSecurityGroupIngress", {"GroupId": gid, **perms}, f"open ports on {name}")
        except CloudError:
            self.delete(res)
            raise
        return res

    def _run_params(self, hp: HostPlan, key: Resource | None, fw: Resource, spot: bool) -> dict:
        s = hp.settings
        p = {"ImageId": s.image, "InstanceType": s.instance_type, "MinCount": "1", "MaxCount": "1",
             "UserData": base64.b64encode(hp.user_data.encode()).decode(), "SecurityGroupId.1": fw.id}
        if key is not None:
            p["KeyName"] = key.name
        if s.zone:
            p["Placement.AvailabilityZone"] = s.zone
        if s.subnet:
            p["SubnetId"] = s.subnet
        # IMDSv2 only, and its token response cannot cross a hop: a container behind the host's
        # NAT never gets one (AWS's guidance for container hosts)
        p.update({"MetadataOptions.HttpTokens": "required", "MetadataOptions.HttpPutResponseHopLimit": "1",
                  "MetadataOptions.HttpEndpoint": "enabled"})
        # the root volume is always mapped, so that it is encrypted (unless the stack opts out)
        rd, n = s.root_disk, 1
        img = self._call("DescribeImages", {"ImageId.1": s.image}).find(_q("imagesSet/item"))
        root = _text(img, "rootDeviceName", "/dev/xvda")
        p[f"BlockDeviceMapping.{n}.DeviceName"] = root
        image_size = next((_text(m, "ebs/volumeSize") for m in img.findall(_q("blockDeviceMapping/item"))
                           if _text(m, "deviceName") == root), None)
        if rd.size_gb or image_size:   # the image's own size unless the stack says (EC2's default too)
            p[f"BlockDeviceMapping.{n}.Ebs.VolumeSize"] = str(rd.size_gb or image_size)
        if rd.type:
            p[f"BlockDeviceMapping.{n}.Ebs.VolumeType"] = rd.type
        p[f"BlockDeviceMapping.{n}.Ebs.Encrypted"] = "true" if rd.encrypted else "false"
        if rd.kms_key:
            p[f"BlockDeviceMapping.{n}.Ebs.KmsKeyId"] = rd.kms_key
        p[f"BlockDeviceMapping.{n}.Ebs.DeleteOnTermination"] = "true"
        n += 1
        for device, virtual in instance_store_mappings(s.instance_type, hp.ephemeral_count):
            p[f"BlockDeviceMapping.{n}.DeviceName"] = device
            p[f"BlockDeviceMapping.{n}.VirtualName"] = virtual
            n += 1
        if s.identity and s.identity.get("instance_profile"):
            # the host's pulls from ECR use this role's credentials (IMDSv2), never delivered keys
            p["IamInstanceProfile.Name"] = s.identity["instance_profile"]
        if spot:
            p["InstanceMarketOptions.MarketType"] = "spot"
            p["InstanceMarketOptions.SpotOptions.SpotInstanceType"] = "one-time"
        _tag_spec(p, 1, "instance", {**hp.tags, "provisioner:market": "spot" if spot else "on-demand"})
        _tag_spec(p, 2, "volume", hp.tags)
        return p

    def create_instance(self, hp: HostPlan, key: Resource | None, fw: Resource) -> Resource:
        spot = hp.settings.spot
        try:
            el = self._call("RunInstances", self._run_params(hp, key, fw, spot), f"launch {hp.resource_name}")
        except CloudQuotaError:
            if not spot:
                raise
            # spot capacity/limits: fall back to on-demand once
            spot = False
            el = self._call("RunInstances", self._run_params(hp, key, fw, False), f"launch {hp.resource_name}")
        item = el.find(_q("instancesSet/item"))
        return Resource("instance", _text(item, "instanceId"), hp.resource_name, hp.host, _text(item, "instanceState/name"),
                        {"market": "spot" if spot else "on-demand"})

    def _describe_instances(self, params: dict) -> list[ET.Element]:
        el = self._call("DescribeInstances", params, "describe instances")
        return [i for r in el.findall(_q("reservationSet/item")) for i in r.findall(_q("instancesSet/item"))]

    def _instance(self, item, extra=None) -> Resource:
        tags = _tags(item)
        return Resource("instance", _text(item, "instanceId"), tags.get("Name", _text(item, "instanceId")),
                        tags.get(TAG_HOST["aws"]), _text(item, "instanceState/name"),
                        {"zone": _text(item, "placement/availabilityZone"), "public_ip": _text(item, "ipAddress"),
                         "private_ip": _text(item, "privateIpAddress"), "type": _text(item, "instanceType"),
                         "tags": tags, **(extra or {})})

    def instance_state(self, inst: Resource) -> Resource:
        # InvalidInstanceID.NotFound right after RunInstances is eventual consistency: retry it.
        items = retry_consistent(lambda: self._describe_instances({"InstanceId.1": inst.id}), **self._retry_kw)
        if not items:
            raise CloudNotFound(f"aws: instance {inst.id} not found")
        return self._instance(items[0], {"market": inst.extra.get("market")})

    def create_volume(self, hp: HostPlan, vp: VolumePlan, inst: Resource) -> Resource:
        p = {"AvailabilityZone": inst.extra["zone"], "Size": str(vp.size_gb), "VolumeType": vp.type or "gp3",
             "Encrypted": "true" if vp.encrypted else "false"}
        if vp.iops:
            p["Iops"] = str(vp.iops)
        if vp.kms_key:
            p["KmsKeyId"] = vp.kms_key
        _tag_spec(p, 1, "volume", vp.tags)
        vid = _text(self._call("CreateVolume", p, f"create volume {vp.name}"), "volumeId")
        res = Resource("volume", vid, vp.tags.get("Name", vp.name), hp.host, extra={"tags": vp.tags})
        poll(lambda: self._volume_state(vid) == "available", timeout=120, interval=1,
             **({"sleep": self.sleep} if self.sleep else {}))
        return res

    def _volume_state(self, vid: str) -> str | None:
        el = retry_consistent(lambda: self._call("DescribeVolumes", {"VolumeId.1": vid}), **self._retry_kw)
        return _text(el, "volumeSet/item/status")

    def attach_volume(self, inst: Resource, vol: Resource, vp: VolumePlan) -> None:
        # a just-created volume may not be visible to AttachVolume yet (InvalidVolume.NotFound)
        retry_consistent(lambda: self._call("AttachVolume", {"VolumeId": vol.id, "InstanceId": inst.id,
                                                             "Device": vp.device}, f"attach {vp.name} to {inst.id}"),
                         **self._retry_kw)

    def console_output(self, inst: Resource) -> str:
        el = self._call("GetConsoleOutput", {"InstanceId": inst.id}, "read console output")
        out = _text(el, "output", "")
        try:
            return base64.b64decode(out).decode("utf-8", "replace")
        except ValueError:
            return ""

    # -- find / delete ---------------------------------------------------------------------------
    def find(self, stack: str | None) -> list[Resource]:
        live = ["pending", "running", "stopping", "stopped", "shutting-down"]
        found = [self._instance(i) for i in self._describe_instances(
            self._filters(stack, {"instance-state-name": live}))]
        vols = self._call("DescribeVolumes", self._filters(stack), "find volumes")
        for v in vols.findall(_q("volumeSet/item")):
            tags = _tags(v)
            if TAG_VOLUME["aws"] not in tags:
                continue  # a root volume (tagged via the instance): it goes with its instance
            found.append(Resource("volume", _text(v, "volumeId"), tags.get("Name", _text(v, "volumeId")),
                                  tags.get(TAG_HOST["aws"]), _text(v, "status"),
                                  {"tags": tags, "size_gb": int(_text(v, "size", "0")),
                                   "zone": _text(v, "availabilityZone"),
                                   "encrypted": _text(v, "encrypted") == "true",
                                   "attached_to": _text(v, "attachmentSet/item/instanceId")}))
        sgs = self._call("DescribeSecurityGroups", self._filters(stack), "find security groups")
        for g in sgs.findall(_q("securityGroupInfo/item")):
            tags = _tags(g)
            found.append(Resource("firewall", _text(g, "groupId"), _text(g, "groupName"), tags.get(TAG_HOST["aws"]),
                                  extra={"tags": tags}))
        keys = self._call("DescribeKeyPairs", self._filters(stack), "find key pairs")
        for k in keys.findall(_q("keySet/item")):
            found.append(Resource("key", _text(k, "keyPairId") or _text(k, "keyName"), _text(k, "keyName"),
                                  extra={"tags": _tags(k)}))
        return found

    def delete(self, res: Resource) -> None:
        action, params = {
            "instance": ("TerminateInstances", {"InstanceId.1": res.id}),
            "volume": ("DeleteVolume", {"VolumeId": res.id}),
            "firewall": ("DeleteSecurityGroup", {"GroupId": res.id}),
            "key": ("DeleteKeyPair", {"KeyName": res.name}),
        }[res.kind]
        try:
            self._call(action, params, f"delete {res.kind} {res.id}")
        except CloudNotFound:
            pass  # already gone: the goal is reached
        except CloudError as err:
            if res.kind in ("volume", "firewall") and err.context.get("code") in ("VolumeInUse", "DependencyViolation"):
                # still attached to / referenced by an instance that is shutting down
                retry(lambda: self._call(action, params, f"delete {res.kind} {res.id}"), attempts=8,
                      retry_on=(CloudError,), **self._retry_kw)
            else:
                raise

    # -- snapshots (provision snapshot / restore) ------------------------------------------------
    def _snapshot(self, el) -> Resource:
        tags = _tags(el)
        return Resource("snapshot", _text(el, "snapshotId"), tags.get(TAG_SNAPSHOT, _text(el, "snapshotId")),
                        tags.get(TAG_HOST["aws"]), _text(el, "status"),
                        {"volume_id": _text(el, "volumeId"), "size_gb": int(_text(el, "volumeSize", "0")),
                         "started": _text(el, "startTime"), "tags": tags})

    def snapshot_volume(self, volume_id: str, name: str, tags: dict[str, str], *, zone: str | None = None) -> Resource:
        """Start an EBS snapshot; its point in time is fixed when this returns (state "pending")."""
        p = {"VolumeId": volume_id, "Description": f"provisioner snapshot {name} of {volume_id}"}
        _tag_spec(p, 1, "snapshot", {**tags, TAG_SNAPSHOT: name})
        return self._snapshot(self._call("CreateSnapshot", p, f"snapshot {volume_id}"))

    def snapshots(self, stack: str | None) -> list[Resource]:
        params = {"Owner.1": "self", **self._filters(stack, {"tag-key": [TAG_SNAPSHOT]})}
        found = [self._snapshot(i) for i in self._call("DescribeSnapshots", params, "find snapshots").findall(
            _q("snapshotSet/item"))]
        mine = [s for s in found if TAG_SNAPSHOT in s.extra["tags"] and TAG_STACK["aws"] in s.extra["tags"]]
        return sorted(mine, key=lambda s: (s.extra["started"] or "", s.id))

    def delete_snapshot(self, snapshot_id: str) -> None:
        try:
            self._call("DeleteSnapshot", {"SnapshotId": snapshot_id}, f"delete snapshot {snapshot_id}")
        except CloudNotFound:
            pass

    def volume_from_snapshot(self, snapshot: Resource, zone: str, tags: dict[str, str],
                             volume_type: str | None = None) -> Resource:
        """A new volume holding `snapshot`, tagged `tags` (so a launch reattaches it as the stack's volume)."""
        p = {"SnapshotId": snapshot.id, "AvailabilityZone": zone, "VolumeType": volume_type or "gp3"}
        _tag_spec(p, 1, "volume", tags)
        vid = _text(self._call("CreateVolume", p, f"create volume from {snapshot.id}"), "volumeId")
        poll(lambda: self._volume_state(vid) == "available", timeout=600, interval=2,
             **({"sleep": self.sleep} if self.sleep else {}))
        return Resource("volume", vid, tags.get("Name", vid), tags.get(TAG_HOST["aws"]), "available",
                        {"zone": zone, "tags": tags, "snapshot_id": snapshot.id})

    def wait_deleted(self, res: Resource, timeout: float) -> bool:
        def gone():
            items = self._describe_instances({"InstanceId.1": res.id})
            return not items or _text(items[0], "instanceState/name") == "terminated"
        return bool(poll(gone, timeout=timeout, interval=2, **({"sleep": self.sleep} if self.sleep else {})))
