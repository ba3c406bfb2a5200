"""A local test double of the GCE compute v1 REST API, strict about what it is sent.

Every request is matched against the methods of Google's published compute v1 discovery document
(shipped in google-api-python-client): unknown paths or query parameters, and request bodies with
unknown fields, wrong types or values outside an enum, are answered 400 *and* recorded in
`self.violations`, which the test fixture asserts is empty. Operations complete at once; new
instances report STAGING for `boot_polls` reads, then RUNNING; the serial port shows cloud-init's
SSH host key block. `inject(method_id, status, reason, times)` queues provider errors.
"""
from __future__ import annotations

import base64
import copy
import itertools
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from gce_discovery import _routes, load_discovery, validate

BASE = "https://www.googleapis.com/compute/v1/"


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str):
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message

    def body(self) -> dict:
        return {"error": {"code": self.status, "message": self.message,
                          "errors": [{"domain": "global", "reason": self.reason, "message": self.message}]}}


def _name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


_FILTER = re.compile(r'^\s*labels\.([a-z0-9_-]+)\s*(=|:)\s*"?([a-z0-9_*-]*)"?\s*$')


def _filter(items: list[dict], expr: str | None) -> list[dict]:
    if not expr:
        return items
    terms = [t for t in re.split(r"\s+AND\s+", expr.strip()) if t]
    conds = []
    for t in terms:
        m = _FILTER.match(t.strip("() "))
        if not m:
            raise ApiError(400, "invalid", f"Invalid value for field 'filter': {expr!r}")
        conds.append(m.groups())
    def ok(item):
        labels = item.get("labels", {})
        return all((k in labels) if (op == ":" and v == "*") else labels.get(k) == v for k, op, v in conds)
    return [i for i in items if ok(i)]


class GceDouble:
    def __init__(self, project: str = "test-project", zones=("us-central1-a", "us-central1-b"),
                 machine_types=("e2-small", "e2-medium", "n2-standard-2"),
                 images=(("debian-cloud", "debian-12", "debian-12-bookworm-v20261101"),
                         ("ubuntu-os-cloud", "ubuntu-2404-lts-amd64", "ubuntu-2404-noble-amd64-v20261101"),
                         ("test-project", "ubuntu-cloudinit", "ubuntu-cloudinit-v1")),
                 token: str = "double-token", boot_polls: int = 1):
        self.doc = load_discovery()
        self.schemas = self.doc["schemas"]
        self.routes = _routes()
        self.global_params = set(self.doc.get("parameters", {}))
        self.project, self.zones, self.machine_types = project, list(zones), list(machine_types)
        self.images = {(p, f): n for p, f, n in images}
        self.token, self.boot_polls = token, boot_polls
        self.instances: dict[tuple[str, str], dict] = {}
        self.disks: dict[tuple[str, str], dict] = {}
        self.snapshots: dict[str, dict] = {}   # name -> snapshot (disks.createSnapshot)
        self.networks = {"default": {"name": "default", "selfLink": self.url("global/networks/default"),
                                     "autoCreateSubnetworks": True}}
        # what a new project's default network comes with (GCE's documented pre-populated rules)
        self.firewalls: dict[str, dict] = {name: {
            "name": name, "network": self.url("global/networks/default"), "direction": "INGRESS", "priority": 65534,
            "sourceRanges": [cidr], "allowed": allowed, "kind": "compute#firewall", "id": str(900 + i),
            "selfLink": self.url(f"global/firewalls/{name}")} for i, (name, cidr, allowed) in enumerate((
                ("default-allow-internal", "10.128.0.0/9", [{"IPProtocol": "tcp", "ports": ["0-65535"]},
                                                            {"IPProtocol": "udp", "ports": ["0-65535"]},
                                                            {"IPProtocol": "icmp"}]),
                ("default-allow-ssh", "0.0.0.0/0", [{"IPProtocol": "tcp", "ports": ["22"]}]),
                ("default-allow-rdp", "0.0.0.0/0", [{"IPProtocol": "tcp", "ports": ["3389"]}]),
                ("default-allow-icmp", "0.0.0.0/0", [{"IPProtocol": "icmp"}])))}
        self.default_firewalls = frozenset(self.firewalls)
        self.requests: list[tuple[str, str, dict | None]] = []
        self.violations: list[str] = []
        self.faults: dict[str, list[tuple[int, str]]] = {}
        self.service_accounts: dict[str, bytes] = {}
        self.token_grants = 0
        self.never_running: set[str] = set()   # instance names that stay STAGING forever
        self._ids = itertools.count(1000)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> str:
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _serve(self, verb):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, body = double.handle(verb, self.path, raw, self.headers.get("Authorization"))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._serve("GET")

            def do_POST(self):
                self._serve("POST")

            def do_DELETE(self):
                self._serve("DELETE")

            def do_PATCH(self):
                self._serve("PATCH")

            def do_PUT(self):
                self._serve("PUT")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def inject(self, method_id: str, status: int, reason: str, times: int = 1) -> None:
        self.faults.setdefault(method_id, []).extend([(status, reason)] * times)

    def url(self, rel: str, project: str | None = None) -> str:
        return f"{BASE}projects/{project or self.project}/{rel}"

    # -- dispatch --------------------------------------------------------------------------------
    def handle(self, verb: str, target: str, raw: bytes, auth: str | None):
        u = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(u.query, keep_blank_values=True).items()}
        body = None
        with self._lock:
            if verb == "POST" and u.path == "/o/oauth2/token":
                return self._token(raw)
            try:
                if auth != f"Bearer {self.token}":
                    raise ApiError(401, "authError", "Invalid Credentials")
                method, params = self.routes.match(verb, u.path)
                if method is None:
                    self._violate(f"{verb} {u.path}: no such method in the compute v1 discovery document")
                    raise ApiError(404, "notFound", f"no method for {verb} {u.path}")
                mid = method["id"]
                for k in query:
                    p = method.get("parameters", {}).get(k)
                    if p is None and k not in self.global_params:
                        self._violate(f"{mid}: unknown query parameter {k!r}")
                    elif p is not None and p.get("type") == "integer" and not re.fullmatch(r"\d+", query[k]):
                        self._violate(f"{mid}: query parameter {k}={query[k]!r} is not an integer")
                if raw:
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        self._violate(f"{mid}: body is not JSON")
                        raise ApiError(400, "parseError", "body is not JSON")
                self.requests.append((mid, u.path, body))
                if "request" in method:
                    if body is None:
                        self._violate(f"{mid}: missing request body")
                    else:
                        errs = validate(body, method["request"], self.schemas, method["request"]["$ref"])
                        if errs:
                            for e in errs:
                                self._violate(f"{mid}: {e}")
                            raise ApiError(400, "invalid", "; ".join(errs))
                elif body not in (None, {}) and verb != "POST":
                    self._violate(f"{mid}: unexpected request body")
                if self.faults.get(mid):
                    status, reason = self.faults[mid].pop(0)
                    raise ApiError(status, reason, f"injected {reason}")
                handler = getattr(self, "m_" + mid.replace("compute.", "").replace(".", "_"), None)
                if handler is None:
                    self._violate(f"{mid}: not implemented by the double")
                    raise ApiError(501, "notImplemented", mid)
                return 200, handler(params, query, body)
            except ApiError as err:
                return err.status, err.body()

    def add_service_account(self, email: str, public_key_pem: bytes) -> None:
        self.service_accounts[email] = public_key_pem

    def _token(self, raw: bytes):
        """OAuth2 JWT-bearer grant, as a service account uses it: verify the RS256 signature."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding

        form = {k: v[-1] for k, v in parse_qs(raw.decode()).items()}

        def unb64(part: str) -> bytes:
            return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        try:
            if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
                raise ValueError("unsupported grant_type")
            head, claims, sig = form["assertion"].split(".")
            claim = json.loads(unb64(claims))
            pem = self.service_accounts.get(claim.get("iss"))
            if pem is None:
                raise ValueError(f"unknown service account {claim.get('iss')!r}")
            if json.loads(unb64(head)) != {"alg": "RS256", "typ": "JWT"} or not claim.get("scope"):
                raise ValueError("bad JWT header or scope")
            serialization.load_pem_public_key(pem).verify(unb64(sig), f"{head}.{claims}".encode(),
                                                          padding.PKCS1v15(), hashes.SHA256())
        except (ValueError, KeyError, InvalidSignature) as exc:
            return 400, {"error": "invalid_grant", "error_description": str(exc) or "Invalid JWT Signature."}
        self.token_grants += 1
        return 200, {"access_token": self.token, "expires_in": 3600, "token_type": "Bearer"}

    def _violate(self, msg: str) -> None:
        self.violations.append(msg)

    def _op(self, kind: str, target: str, zone: str | None = None) -> dict:
        n = f"operation-{next(self._ids)}"
        scope = f"zones/{zone}/operations/{n}" if zone else f"global/operations/{n}"
        op = {"kind": "compute#operation", "id": str(next(self._ids)), "name": n, "operationType": kind,
              "status": "DONE", "progress": 100, "targetLink": target, "selfLink": self.url(scope)}
        if zone:
            op["zone"] = self.url(f"zones/{zone}")
        return op

    def _zone(self, params) -> str:
        z = params["zone"]
        if z not in self.zones:
            raise ApiError(404, "notFound", f"The resource 'projects/{self.project}/zones/{z}' was not found")
        return z

    # -- read-only catalogue -----------------------------------------------------------------------
    def m_projects_get(self, p, q, b):
        return {"kind": "compute#project", "name": self.project, "id": "1", "selfLink": self.url("")[:-1]}

    def _zone_res(self, z):
        return {"kind": "compute#zone", "name": z, "status": "UP", "region": self.url(f"regions/{z[:-2]}"),
                "selfLink": self.url(f"zones/{z}")}

    def m_zones_get(self, p, q, b):
        return self._zone_res(self._zone(p))

    def m_zones_list(self, p, q, b):
        return {"kind": "compute#zoneList", "items": [self._zone_res(z) for z in self.zones]}

    def m_machineTypes_get(self, p, q, b):
        z = self._zone(p)
        if p["machineType"] not in self.machine_types:
            raise ApiError(404, "notFound", f"The resource 'projects/{self.project}/zones/{z}/machineTypes/"
                                            f"{p['machineType']}' was not found")
        return {"kind": "compute#machineType", "name": p["machineType"], "zone": z,
                "selfLink": self.url(f"zones/{z}/machineTypes/{p['machineType']}")}

    def m_diskTypes_get(self, p, q, b):
        z = self._zone(p)
        if p["diskType"] not in ("pd-standard", "pd-balanced", "pd-ssd", "local-ssd"):
            raise ApiError(404, "notFound", f"diskType {p['diskType']} not found")
        return {"kind": "compute#diskType", "name": p["diskType"], "selfLink": self.url(f"zones/{z}/diskTypes/"
                                                                                          f"{p['diskType']}")}

    def _image(self, project, name):
        return {"kind": "compute#image", "name": name, "status": "READY",
                "selfLink": self.url(f"global/images/{name}", project)}

    def m_images_getFromFamily(self, p, q, b):
        name = self.images.get((p["project"], p["family"]))
        if not name:
            raise ApiError(404, "notFound", f"The resource 'projects/{p['project']}/global/images/family/"
                                            f"{p['family']}' was not found")
        return self._image(p["project"], name)

    def m_images_get(self, p, q, b):
        if p["image"] not in {n for (proj, _), n in self.images.items() if proj == p["project"]}:
            raise ApiError(404, "notFound", f"The resource 'projects/{p['project']}/global/images/{p['image']}' "
                                            "was not found")
        return self._image(p["project"], p["image"])

    def m_networks_get(self, p, q, b):
        if p["network"] not in self.networks:
            raise ApiError(404, "notFound", f"network {p['network']} not found")
        return self.networks[p["network"]]

    def m_networks_insert(self, p, q, b):
        name = b.get("name")
        if not name or name in self.networks:
            raise ApiError(409 if name else 400, "alreadyExists" if name else "required", f"network {name!r}")
        self.networks[name] = {**copy.deepcopy(b), "kind": "compute#network", "id": str(next(self._ids)),
                               "selfLink": self.url(f"global/networks/{name}")}
        return self._op("insert", self.networks[name]["selfLink"])

    def m_networks_list(self, p, q, b):
        return {"kind": "compute#networkList", "items": list(self.networks.values())}

    def m_networks_delete(self, p, q, b):
        name = p["network"]
        if name not in self.networks:
            raise ApiError(404, "notFound", f"network {name} not found")
        users = [f for f in self.firewalls.values() if _name(f.get("network", "")) == name]
        users += [i for i in self.instances.values()
                  if any(_name(n.get("network", "")) == name for n in i.get("networkInterfaces", []))]
        if users:
            raise ApiError(400, "resourceInUseByAnotherResource",
                           f"network {name} is already being used by {users[0].get('name')}")
        del self.networks[name]
        return self._op("delete", self.url(f"global/networks/{name}"))

    def effective_ingress(self, inst: dict) -> list[dict]:
        """The firewall rules that let traffic into `inst`: on its network, INGRESS, and with no
        target tags or one of its tags (GCE's own matching)."""
        nets = {_name(n.get("network", "")) for n in inst.get("networkInterfaces", [])}
        tags = set(inst.get("tags", {}).get("items", []))
        return [f for f in self.firewalls.values() if _name(f.get("network", "")) in nets
                and f.get("direction", "INGRESS") == "INGRESS" and not f.get("disabled")
                and (not f.get("targetTags") or tags & set(f["targetTags"]))]

    def m_zoneOperations_get(self, p, q, b):
        return {"kind": "compute#operation", "name": p["operation"], "status": "DONE",
                "selfLink": self.url(f"zones/{p['zone']}/operations/{p['operation']}")}

    def m_globalOperations_get(self, p, q, b):
        return {"kind": "compute#operation", "name": p["operation"], "status": "DONE",
                "selfLink": self.url(f"global/operations/{p['operation']}")}

    # -- firewalls -----------------------------------------------------------------------------------
    def m_firewalls_insert(self, p, q, b):
        name = b.get("name")
        if not name or name in self.firewalls:
            raise ApiError(409 if name else 400, "alreadyExists" if name else "required", f"firewall {name!r}")
        if _name(b.get("network", "default")) not in self.networks:
            raise ApiError(404, "notFound", f"network {b.get('network')} not found")
        fw = {**copy.deepcopy(b), "kind": "compute#firewall", "id": str(next(self._ids)),
              "selfLink": self.url(f"global/firewalls/{name}")}
        self.firewalls[name] = fw
        return self._op("insert", fw["selfLink"])

    def m_firewalls_get(self, p, q, b):
        if p["firewall"] not in self.firewalls:
            raise ApiError(404, "notFound", f"firewall {p['firewall']} not found")
        return self.firewalls[p["firewall"]]

    def m_firewalls_list(self, p, q, b):
        return {"kind": "compute#firewallList", "items": list(self.firewalls.values())}

    def m_firewalls_delete(self, p, q, b):
        if self.firewalls.pop(p["firewall"], None) is None:
            raise ApiError(404, "notFound", f"firewall {p['firewall']} not found")
        return self._op("delete", self.url(f"global/firewalls/{p['firewall']}"))

    # -- disks ---------------------------------------------------------------------------------------
    def m_disks_insert(self, p, q, b):
        z = self._zone(p)
        name = b.get("name")
        dtype = _name(b.get("type", "pd-standard"))
        if dtype not in ("pd-standard", "pd-balanced", "pd-ssd", "pd-extreme"):
            raise ApiError(400, "invalid", f"Invalid value for field 'resource.type': {b.get('type')!r}")
        if (z, name) in self.disks:
            raise ApiError(409, "alreadyExists", f"disk {name} exists")
        d = {**copy.deepcopy(b), "kind": "compute#disk", "id": str(next(self._ids)), "status": "READY",
             "zone": self.url(f"zones/{z}"), "selfLink": self.url(f"zones/{z}/disks/{name}"), "users": []}
        d["sizeGb"] = str(d.get("sizeGb", "10"))
        self.disks[(z, name)] = d
        return self._op("insert", d["selfLink"], z)

    def m_disks_get(self, p, q, b):
        z = self._zone(p)
        if (z, p["disk"]) not in self.disks:
            raise ApiError(404, "notFound", f"disk {p['disk']} not found")
        return self.disks[(z, p["disk"])]

    def m_disks_aggregatedList(self, p, q, b):
        items = {}
        for (z, _), d in self.disks.items():
            items.setdefault(f"zones/{z}", {"disks": []})["disks"].append(d)
        return {"kind": "compute#diskAggregatedList",
                "items": {k: {"disks": _filter(v["disks"], q.get("filter"))} for k, v in items.items()}}

    def m_disks_delete(self, p, q, b):
        z = self._zone(p)
        d = self.disks.get((z, p["disk"]))
        if d is None:
            raise ApiError(404, "notFound", f"disk {p['disk']} not found")
        if d["users"]:
            raise ApiError(400, "resourceInUseByAnotherResource", f"disk {p['disk']} is in use by {d['users']}")
        del self.disks[(z, p["disk"])]
        return self._op("delete", d["selfLink"], z)

    # -- instances -------------------------------------------------------------------------------------
    def m_instances_insert(self, p, q, b):
        z = self._zone(p)
        name = b.get("name")
        if (z, name) in self.instances:
            raise ApiError(409, "alreadyExists", f"instance {name} exists")
        if _name(b.get("machineType", "")) not in self.machine_types:
            raise ApiError(400, "invalid", f"Invalid value for field 'resource.machineType': {b.get('machineType')!r}")
        inst = {**copy.deepcopy(b), "kind": "compute#instance", "id": str(next(self._ids)), "status": "STAGING",
                "zone": self.url(f"zones/{z}"), "selfLink": self.url(f"zones/{z}/instances/{name}"), "_polls": 0}
        for i, nic in enumerate(inst.get("networkInterfaces", [])):
            if _name(nic.get("network", "default")) not in self.networks:
                raise ApiError(404, "notFound", f"network {nic.get('network')} not found")
            nic["networkIP"] = f"10.128.0.{10 + len(self.instances)}"
            for ac in nic.get("accessConfigs", []):
                ac["natIP"] = f"203.0.113.{10 + len(self.instances)}"
        for i, disk in enumerate(inst.get("disks", [])):
            init = disk.get("initializeParams", {})
            if disk.get("boot"):
                src = init.get("sourceImage", "")
                m = re.search(r"projects/([^/]+)/global/images/(family/)?([^/]+)$", src)
                known = m and ((m.group(1), m.group(3)) in self.images if m.group(2)
                               else m.group(3) in {n for (pr, _), n in self.images.items() if pr == m.group(1)})
                if not known:
                    raise ApiError(404, "notFound", f"The resource '{src}' was not found")
                boot = {"name": name, "sizeGb": str(init.get("diskSizeGb", "10")), "labels": init.get("labels", {}),
                        "type": init.get("diskType", "pd-standard")}
                self.disks[(z, name)] = {**boot, "kind": "compute#disk", "status": "READY", "users": [inst["selfLink"]],
                                         "zone": self.url(f"zones/{z}"), "selfLink": self.url(f"zones/{z}/disks/{name}")}
                disk["source"] = self.url(f"zones/{z}/disks/{name}")
            elif disk.get("type") == "SCRATCH" and "local-ssd" not in init.get("diskType", ""):
                raise ApiError(400, "invalid", "SCRATCH disks must use diskType local-ssd")
            elif disk.get("source"):
                d = self.disks.get((z, _name(disk["source"])))
                if d is None:
                    raise ApiError(404, "notFound", f"disk {disk['source']} not found")
                d["users"].append(inst["selfLink"])
            disk.setdefault("deviceName", f"persistent-disk-{i}" if disk.get("type") != "SCRATCH"
                            else f"local-ssd-{i}")
            disk["index"] = i
        self.instances[(z, name)] = inst
        return self._op("insert", inst["selfLink"], z)

    def _public(self, inst):
        return {k: v for k, v in inst.items() if not k.startswith("_")}

    def _get_instance(self, p):
        z = self._zone(p)
        inst = self.instances.get((z, p["instance"]))
        if inst is None:
            raise ApiError(404, "notFound", f"The resource 'projects/{self.project}/zones/{z}/instances/"
                                            f"{p['instance']}' was not found")
        return z, inst

    def m_instances_get(self, p, q, b):
        z, inst = self._get_instance(p)
        if inst["status"] == "STAGING" and inst["name"] not in self.never_running:
            inst["_polls"] += 1
            if inst["_polls"] > self.boot_polls:
                inst["status"] = "RUNNING"
        return self._public(inst)

    def m_instances_aggregatedList(self, p, q, b):
        items = {}
        for (z, _), inst in self.instances.items():
            items.setdefault(f"zones/{z}", []).append(self._public(inst))
        return {"kind": "compute#instanceAggregatedList",
                "items": {k: {"instances": _filter(v, q.get("filter"))} for k, v in items.items()}}

    def m_instances_delete(self, p, q, b):
        z, inst = self._get_instance(p)
        for disk in inst.get("disks", []):
            d = self.disks.get((z, _name(disk.get("source", ""))))
            if d is None:
                continue
            d["users"] = [u for u in d["users"] if u != inst["selfLink"]]
            if disk.get("autoDelete"):
                del self.disks[(z, d["name"])]
        del self.instances[(z, p["instance"])]
        return self._op("delete", inst["selfLink"], z)

    def m_instances_attachDisk(self, p, q, b):
        z, inst = self._get_instance(p)
        d = self.disks.get((z, _name(b.get("source", ""))))
        if d is None:
            raise ApiError(404, "notFound", f"disk {b.get('source')} not found")
        if d["users"]:
            raise ApiError(400, "resourceInUseByAnotherResource", f"disk {d['name']} is attached already")
        d["users"].append(inst["selfLink"])
        inst["disks"].append({**copy.deepcopy(b), "index": len(inst["disks"]), "type": "PERSISTENT"})
        return self._op("attachDisk", inst["selfLink"], z)

    def m_instances_getSerialPortOutput(self, p, q, b):
        z, inst = self._get_instance(p)
        text = "[    0.000000] Linux version 6.1.0\r\n"
        if inst["status"] == "RUNNING":
            n = inst["name"]
            text += ("ci-info: no authorized SSH keys fingerprints found for user root.\r\n"
                     "-----BEGIN SSH HOST KEY FINGERPRINTS-----\r\n"
                     f"256 SHA256:{n}Ed25519FingerprintAAAAAAAAAAAAAAAAAAAA root@{n} (ED25519)\r\n"
                     f"256 SHA256:{n}EcdsaFingerprintAAAAAAAAAAAAAAAAAAAAAA root@{n} (ECDSA)\r\n"
                     "-----END SSH HOST KEY FINGERPRINTS-----\r\n"
                     "-----BEGIN SSH HOST KEY KEYS-----\r\n"
                     "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyForTestsOnlyAAAAAAAAAAAAAAAAAAAA root@" + n + "\r\n"
                     "-----END SSH HOST KEY KEYS-----\r\n")
        return {"kind": "compute#serialPortOutput", "contents": text, "start": "0", "next": str(len(text)),
                "selfLink": inst["selfLink"] + "/serialPort"}

    # -- snapshots (added for `provision snapshot`) -----------------------------------------------------
    # A snapshot is READY as soon as it is made; the source disk must exist in the zone.
    def m_disks_createSnapshot(self, p, q, b):
        z = self._zone(p)
        d = self.disks.get((z, p["disk"]))
        if d is None:
            raise ApiError(404, "notFound", f"disk {p['disk']} not found")
        name = b.get("name")
        if not name or not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name):
            raise ApiError(400, "invalid", f"Invalid value for field 'resource.name': {name!r}")
        if name in self.snapshots:
            raise ApiError(409, "alreadyExists", f"snapshot {name} exists")
        snap = {**copy.deepcopy(b), "kind": "compute#snapshot", "id": str(next(self._ids)), "status": "READY",
                "sourceDisk": d["selfLink"], "diskSizeGb": d.get("sizeGb", "10"),
                "creationTimestamp": f"2026-11-23T00:00:{len(self.snapshots):02d}.000-00:00",
                "selfLink": self.url(f"global/snapshots/{name}")}
        self.snapshots[name] = snap
        return self._op("createSnapshot", d["selfLink"], z)

    def m_snapshots_get(self, p, q, b):
        if p["snapshot"] not in self.snapshots:
            raise ApiError(404, "notFound", f"snapshot {p['snapshot']} not found")
        return self.snapshots[p["snapshot"]]

    def m_snapshots_list(self, p, q, b):
        return {"kind": "compute#snapshotList", "items": _filter(list(self.snapshots.values()), q.get("filter"))}

    def m_snapshots_delete(self, p, q, b):
        snap = self.snapshots.pop(p["snapshot"], None)
        if snap is None:
            raise ApiError(404, "notFound", f"snapshot {p['snapshot']} not found")
        return self._op("delete", snap["selfLink"])
