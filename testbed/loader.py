"""Topology files: YAML -> JSON Schema -> semantic checks -> ``Topology``.

Validation is complete before anything touches the kernel. Every error is a
``TopologyError`` naming the file, the path inside it
(``hosts.server.nic.bond.mode``) and what is allowed.
"""

from __future__ import annotations

import ipaddress
import json
import re
from importlib import resources
from typing import Any, Dict, Iterable, List, Tuple

import yaml

from testbed import naming
from testbed.errors import TopologyError
from testbed.topology import Bond, Function, Host, Nic, Offload, Topology

DEFAULT_SUBNET = "198.18.0.0/24"
MAX_VFS = 64
_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


def schema() -> dict:
    text = resources.files("testbed").joinpath("schema/topology.schema.json").read_text()
    return json.loads(text)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys instead of keeping the last."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: Dict[Any, Any] = {}
    for key_node, _value in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            line = key_node.start_mark.line + 1
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {line}; first at line {seen[key]})",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _fmt_path(parts: Iterable[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def load(path: str, *, lab_name: str | None = None) -> Topology:
    """Read, validate and model a topology file; raises TopologyError."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise TopologyError(path, "", f"cannot read: {exc.strerror}") from None
    return loads(text, path, lab_name=lab_name)


def loads(text: str, file: str = "<string>", *, lab_name: str | None = None) -> Topology:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise TopologyError(file, where, f"not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise TopologyError(file, "", "must be a mapping with 'name' and 'hosts'")
    validate_schema(data, file)
    return build_model(data, file, lab_name=lab_name)


def _schema_message(err: Any) -> Tuple[List[Any], str]:
    path = list(err.absolute_path)
    v = err.validator
    if v == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        return path, f"unknown key {', '.join(map(repr, extra))}; allowed: {', '.join(allowed)}"
    if v == "enum":
        return path, f"{err.instance!r} is not allowed; one of: {', '.join(map(str, err.validator_value))}"
    if v == "required":
        return path, err.message.replace("is a required property", "is required")
    if v == "pattern":
        return path, (f"{err.instance!r} is not a valid name: a lowercase letter, then lowercase "
                      "letters or digits")
    if v == "propertyNames":
        return path, f"{err.instance!r} is not a valid host name: a lowercase letter, then lowercase letters or digits"
    if v == "oneOf" and path and path[-1] in ("vfs", "rdma"):
        if path[-1] == "vfs":
            return path, f"must be a VF count 0..{MAX_VFS} or a list of at most {MAX_VFS} VFs ({{name, mac, address}})"
        return path, "must be true/false or a mapping with optional 'name' and 'verbs'"
    return path, err.message


def validate_schema(data: dict, file: str) -> None:
    import jsonschema  # slow to import (~10 s in a TCG guest); only validation needs it

    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(list(e.absolute_path)), str(e.absolute_path)))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        path, msg = _schema_message(best)
        raise TopologyError(file, _fmt_path(path), msg)


class _Checker:
    """Semantic checks and model building, after the schema passed."""

    def __init__(self, data: dict, file: str, lab: str) -> None:
        self.data = data
        self.file = file
        self.lab = lab
        self.macs: Dict[str, str] = {}
        self.addrs: Dict[ipaddress.IPv4Address, str] = {}
        self.ifnames_switch: Dict[str, str] = {}

    def fail(self, path: str, msg: str) -> None:
        raise TopologyError(self.file, path, msg)

    def ifname(self, path: str, name: str, what: str) -> str:
        if len(name) > naming.IFNAMSIZ_MAX:
            self.fail(path, f"{what} {name!r} would be {len(name)} characters; interface names are at most "
                            f"{naming.IFNAMSIZ_MAX} (shorten the name)")
        return name

    def mac(self, path: str, value: str | None, *owner: str) -> str:
        if value is None:
            value = naming.stable_mac(self.lab, *owner)
        if not _MAC_RE.match(value):
            self.fail(path, f"{value!r} is not a MAC address (six hex pairs: 02:00:00:00:00:01)")
        value = value.lower()
        if int(value[:2], 16) & 1:
            self.fail(path, f"{value} is a multicast MAC; use a unicast one (first byte even, e.g. 02:...)")
        if value == "00:00:00:00:00:00":
            self.fail(path, "00:00:00:00:00:00 is not a usable MAC")
        if value in self.macs:
            self.fail(path, f"MAC {value} is already used by {self.macs[value]}")
        self.macs[value] = path
        return value

    def subnet(self) -> ipaddress.IPv4Network:
        raw = self.data.get("subnet", DEFAULT_SUBNET)
        try:
            net = ipaddress.IPv4Network(raw, strict=True)
        except ValueError as exc:
            self.fail("subnet", f"{raw!r} is not an IPv4 subnet ({exc}); e.g. {DEFAULT_SUBNET}")
        if net.prefixlen > 30:
            self.fail("subnet", f"{raw} is too small; use /30 or larger")
        return net

    def address(self, path: str, raw: str | None, net: ipaddress.IPv4Network,
                pool: List[ipaddress.IPv4Address]) -> ipaddress.IPv4Interface:
        if raw is None:
            while pool and pool[0] in self.addrs:
                pool.pop(0)
            if not pool:
                self.fail(path, f"no free address left in subnet {net}; give a larger 'subnet'")
            ip = ipaddress.IPv4Interface(f"{pool.pop(0)}/{net.prefixlen}")
        else:
            try:
                ip = ipaddress.IPv4Interface(raw)
            except ValueError:
                self.fail(path, f"{raw!r} is not an IPv4 address with prefix length (e.g. 198.18.0.1/24)")
            if "/" not in raw:
                self.fail(path, f"{raw!r} has no prefix length (e.g. {raw}/{net.prefixlen})")
            if ip.network != net:
                self.fail(path, f"{raw} is not in the lab subnet {net} (all hosts share one L2 segment)")
            if ip.ip in (ip.network.network_address, ip.network.broadcast_address):
                self.fail(path, f"{raw} is the network or broadcast address of {ip.network}")
        if ip.ip in self.addrs:
            self.fail(path, f"address {ip.ip} is already used by {self.addrs[ip.ip]}")
        self.addrs[ip.ip] = path
        return ip

    def explicit_addresses(self) -> None:
        """Reserve every explicitly given address first so automatic ones avoid them."""
        for hname, h in self.data["hosts"].items():
            nic = h.get("nic")
            base = f"hosts.{hname}"
            cands = [(f"{base}.address", h.get("address"))]
            if nic:
                cands.append((f"{base}.nic.address", nic.get("address")))
                if isinstance(nic.get("vfs"), list):
                    cands += [(f"{base}.nic.vfs[{i}].address", vf.get("address"))
                              for i, vf in enumerate(nic["vfs"])]
            for _path, raw in cands:
                if raw is not None:
                    try:
                        self.reserved.add(ipaddress.IPv4Interface(raw).ip)
                    except ValueError:
                        pass  # reported with its path when that entry is built

    def bond(self, path: str, raw: dict, ports: Tuple[str, ...]) -> Bond:
        mode = raw["mode"]
        if "primary" in raw:
            if mode != "active-backup":
                self.fail(f"{path}.primary", f"'primary' only applies to mode active-backup (mode is {mode})")
            if raw["primary"] not in ports:
                allowed = ", ".join(ports)
                self.fail(f"{path}.primary", f"{raw['primary']!r} is not a port of this NIC; one of: {allowed}")
        if "primary_reselect" in raw and mode != "active-backup":
            self.fail(f"{path}.primary_reselect", f"only applies to mode active-backup (mode is {mode})")
        if "xmit_hash_policy" in raw and mode == "active-backup":
            self.fail(f"{path}.xmit_hash_policy", "does not apply to active-backup; use balance-xor or 802.3ad")
        for key in ("lacp_rate", "min_links"):
            if key in raw and mode != "802.3ad":
                self.fail(f"{path}.{key}", f"only applies to mode 802.3ad (mode is {mode})")
        if raw.get("min_links", 0) > len(ports):
            self.fail(f"{path}.min_links", f"{raw['min_links']} is more than the NIC's {len(ports)} ports")
        miimon = raw.get("miimon", 100)
        for key in ("updelay", "downdelay"):
            val = raw.get(key, 0)
            if val and not miimon:
                self.fail(f"{path}.{key}", "needs miimon > 0")
            if val and val % miimon:
                self.fail(f"{path}.{key}", f"{val} is not a multiple of miimon ({miimon}); the bond would round it")
        return Bond(mode=mode, miimon=miimon, updelay=raw.get("updelay", 0), downdelay=raw.get("downdelay", 0),
                    primary=raw.get("primary"), primary_reselect=raw.get("primary_reselect"),
                    xmit_hash_policy=raw.get("xmit_hash_policy"), lacp_rate=raw.get("lacp_rate"),
                    min_links=raw.get("min_links"))

    def offload(self, path: str, raw: dict, bond: Bond) -> Offload:
        default = "active-backup" if bond.mode == "active-backup" else "hash"
        mode = raw.get("mode", default)
        if (mode == "active-backup") != (bond.mode == "active-backup"):
            want = "active-backup" if bond.mode == "active-backup" else "hash or vf-split"
            self.fail(f"{path}.mode", f"offload {mode!r} does not fit bond mode {bond.mode!r}; use {want}")
        buckets = raw.get("buckets", 16)
        if buckets & (buckets - 1):
            self.fail(f"{path}.buckets", f"{buckets} is not a power of two (e.g. 16)")
        return Offload(mode=mode, buckets=buckets)

    def nic(self, hname: str, raw: dict, net, pool) -> Tuple[Nic, ipaddress.IPv4Interface, str]:
        path = f"hosts.{hname}.nic"
        ports = tuple(naming.port_name(i) for i in range(raw.get("ports", 2)))
        for p in ports:
            self.ifname(f"{path}.ports", naming.switch_port(hname, p), "switch port")
        bond = self.bond(f"{path}.bond", raw["bond"], ports)
        if bond.mode == "802.3ad":
            self.ifname(f"hosts.{hname}", naming.partner_bond(hname), "partner bond")
        offload = self.offload(f"{path}.offload", raw.get("offload", {}), bond)
        mac = self.mac(f"{path}.mac", raw.get("mac"), hname, "bond")
        address = self.address(f"{path}.address", raw.get("address"), net, pool)
        vfs_raw = raw.get("vfs", [])
        if isinstance(vfs_raw, int):
            vfs_raw = [{"name": f"vf{i}"} for i in range(vfs_raw)]
        vfs: List[Function] = []
        names: Dict[str, str] = {}
        for i, vf in enumerate(vfs_raw):
            vpath = f"{path}.vfs[{i}]"
            name = vf["name"]
            if name in names or name in ports or name in (bond.name, naming.HOST_IF, "lo"):
                self.fail(f"{vpath}.name", f"duplicate name {name!r} on host {hname}")
            names[name] = vpath
            self.ifname(f"{vpath}.name", naming.representor(name), "representor")
            addr = self.address(f"{vpath}.address", vf.get("address"), net, pool)
            vfs.append(Function(name=name, mac=self.mac(f"{vpath}.mac", vf.get("mac"), hname, name),
                                address=addr, netns=naming.vf_netns(self.lab, hname, name),
                                verbs=bool(vf.get("verbs", False))))
        rdma = None
        rraw = raw.get("rdma", False)
        if rraw:
            name = rraw.get("name", "rdma0") if isinstance(rraw, dict) else "rdma0"
            verbs = bool(rraw.get("verbs", False)) if isinstance(rraw, dict) else False
            if name in names or name in ports:
                self.fail(f"{path}.rdma.name", f"duplicate name {name!r} on host {hname}")
            self.ifname(f"{path}.rdma.name", naming.representor(name), "representor")
            # The RDMA function speaks with the bond's own MAC and address, as RoCE does on a real NIC.
            rdma = Function(name=name, mac=mac, address=address,
                            netns=naming.vf_netns(self.lab, hname, name), kind="rdma", verbs=verbs)
        return Nic(ports=ports, bond=bond, address=address, mac=mac, offload=offload,
                   vfs=tuple(vfs), rdma=rdma), address, mac

    def build(self, file: str) -> Topology:
        net = self.subnet()
        self.reserved: set = set()
        self.explicit_addresses()
        pool = [ip for ip in net.hosts() if ip not in self.reserved]
        hosts = []
        for hname, h in self.data["hosts"].items():
            if hname == naming.SWITCH:
                self.fail(f"hosts.{hname}", f"{hname!r} is reserved for the lab's switch; pick another host name")
            netns = naming.host_netns(self.lab, hname)
            if "nic" in h:
                if "address" in h:
                    self.fail(f"hosts.{hname}.address", "a NIC host's address goes in nic.address (the bond's)")
                if "mac" in h:
                    self.fail(f"hosts.{hname}.mac", "a NIC host's MAC goes in nic.mac (the bond's)")
                nic, addr, mac = self.nic(hname, h["nic"], net, pool)
            else:
                self.ifname(f"hosts.{hname}", naming.switch_port(hname, naming.HOST_IF), "switch port")
                nic = None
                mac = self.mac(f"hosts.{hname}.mac", h.get("mac"), hname, naming.HOST_IF)
                addr = self.address(f"hosts.{hname}.address", h.get("address"), net, pool)
            if "verbs" in h and nic is not None:
                self.fail(f"hosts.{hname}.verbs", "a NIC host's verbs devices go on its functions "
                                                  "(nic.rdma.verbs, nic.vfs[i].verbs)")
            hosts.append(Host(name=hname, netns=netns, address=addr, mac=mac, nic=nic,
                              verbs=bool(h.get("verbs", False))))
        return Topology(name=self.lab, file=file, subnet=net, hosts=tuple(hosts),
                        description=self.data.get("description", ""), raw=self.data)


def build_model(data: dict, file: str, *, lab_name: str | None = None) -> Topology:
    lab = lab_name or data["name"]
    if lab_name is not None and not re.match(r"^[a-z][a-z0-9]{0,11}$", lab_name):
        raise TopologyError(file, "name", f"lab name {lab_name!r} must be a lowercase letter then up to 11 "
                                          "lowercase letters or digits")
    return _Checker(data, file, lab).build(file)
