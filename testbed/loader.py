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
from typing import Any, Dict, Iterator, List, Tuple

from testbed import naming, topofile
from testbed.bond import options
from testbed.errors import TopologyError, UsageError, one_line
from testbed.topofile import clip, fmt_path, short
from testbed.topology import Bond, Function, Host, Nic, Offload, Topology

DEFAULT_SUBNET = "198.18.0.0/24"  # the lab subnet when the file gives none and the lab's addresses fit in it
DEFAULT_RANGE = "198.18.0.0/15"  # the benchmarking range (RFC 2544): a larger default subnet is carved from it
DEFAULT_SUBNET6 = "2001:2::/64"  # a dual-stack lab's IPv6 subnet: from the benchmarking range 2001:2::/48 (RFC 5180)
NO_ADDRESS = "none"  # a VF's ``address: none``: no IPv4 (an IPv6-only VF)
MAX_VFS = 256  # per NIC host: what a real SR-IOV port carries (64-256 VFs)
_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


def schema() -> dict:
    text = resources.files("testbed").joinpath("schema/topology.schema.json").read_text()
    data = options.schema_enums(json.loads(text))
    count, listed = data["$defs"]["nic"]["properties"]["vfs"]["oneOf"]
    count["maximum"] = listed["maxItems"] = MAX_VFS  # the one VF limit: MAX_VFS
    return data


def load(path: str, *, lab_name: str | None = None) -> Topology:
    """Read, validate and model a topology file; raises TopologyError (bounded in time and memory)."""
    return loads(topofile.read_text(path), path, lab_name=lab_name)


def loads(text: str, file: str = "<string>", *, lab_name: str | None = None) -> Topology:
    data = topofile.parse(text, file)
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
        more = f" and {len(extra) - 3:,} more" if len(extra) > 3 else ""
        keys = ", ".join(short(k, 30) for k in extra[:3]) + more
        return path, f"unknown key {keys}; allowed: {', '.join(allowed)}"
    if v == "enum":
        return path, f"{short(err.instance)} is not allowed; one of: {', '.join(map(str, err.validator_value))}"
    if v == "required":
        return path, err.message.replace("is a required property", "is required")
    if v in ("pattern", "propertyNames") and path and path[-1] == "ports":
        return path, f"{short(err.instance)} is not a port name (pf0, pf1, ...)"
    if v == "pattern":
        return path, (f"{short(err.instance)} is not a valid name: a lowercase letter, then lowercase "
                      "letters or digits")
    if v == "propertyNames":
        return path, (f"{short(err.instance)} is not a valid host name: a lowercase letter, then lowercase "
                      "letters or digits")
    if v == "oneOf" and path and path[-1] in ("vfs", "rdma"):
        if path[-1] == "vfs":
            return path, f"must be a VF count 0..{MAX_VFS} or a list of at most {MAX_VFS} VFs ({{name, mac, address}})"
        return path, "must be true/false or a mapping with optional 'name' and 'verbs'"
    if v == "type":
        want = v_val if isinstance(v_val := err.validator_value, str) else " or ".join(v_val)
        return path, f"{short(err.instance)} is not of type {want}"
    if v in ("maximum", "maxItems") and path and path[-1] == "vfs":
        count = err.instance if isinstance(err.instance, int) else len(err.instance)
        return path, (f"{count:,} VFs is more than the {MAX_VFS} a host may have (a real SR-IOV port carries "
                      f"64-256); give at most {MAX_VFS}, or spread them over more NIC hosts")
    if v in ("minimum", "maximum"):
        than = "less than the minimum" if v == "minimum" else "greater than the maximum"
        return path, f"{short(err.instance)} is {than} of {err.validator_value}"
    if v == "maxLength":
        return path, f"{short(err.instance)} is longer than {err.validator_value} characters"
    if v == "maxItems":
        return path, f"has {len(err.instance):,} entries; at most {err.validator_value}"
    return path, one_line(err.message, 120)  # jsonschema's own wording quotes the value: keep it short


def validate_schema(data: dict, file: str) -> None:
    import jsonschema  # slow to import (~10 s in a TCG guest); only validation needs it

    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(list(e.absolute_path)), str(e.absolute_path)))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        path, msg = _schema_message(best)
        raise TopologyError(file, fmt_path(path), msg)


class _Checker:
    """Semantic checks and model building, after the schema passed."""

    def __init__(self, data: dict, file: str, lab: str) -> None:
        self.data = data
        self.file = file
        self.lab = lab
        self.macs: Dict[str, str] = {}
        self.addrs: Dict[ipaddress.IPv4Address | ipaddress.IPv6Address, str] = {}
        self.ifnames_switch: Dict[str, str] = {}
        self.subnet_note = ""  # why the subnet is what it is, when the loader chose it

    def fail(self, path: str, msg: str) -> None:
        raise TopologyError(self.file, path, msg)

    def ifname(self, path: str, name: str, what: str) -> str:
        if len(name) > naming.IFNAMSIZ_MAX:
            self.fail(path, f"{what} {short(name)} would be {len(name):,} characters; interface names are at most "
                            f"{naming.IFNAMSIZ_MAX} (shorten the name)")
        return name

    def mac(self, path: str, value: str | None, *owner: str) -> str:
        if value is None:
            value = naming.stable_mac(self.lab, *owner)
        if not _MAC_RE.match(value):
            self.fail(path, f"{short(value)} is not a MAC address (six hex pairs: 02:00:00:00:00:01)")
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
        if "subnet" not in self.data:
            return self.default_subnet()
        return self.network("subnet", self.data["subnet"], ipaddress.IPv4Network, DEFAULT_SUBNET, 30)

    def subnet6(self) -> ipaddress.IPv6Network | None:
        """The IPv6 subnet of a dual-stack lab (``ipv6: true``): ``subnet6`` or 2001:2::/64; None without."""
        if not self.data.get("ipv6", False):
            if "subnet6" in self.data:
                self.fail("subnet6", "only applies to a dual-stack lab; add `ipv6: true` at the top of the file")
            return None
        return self.network("subnet6", self.data.get("subnet6", DEFAULT_SUBNET6), ipaddress.IPv6Network,
                            DEFAULT_SUBNET6, 120)

    def network(self, key: str, raw: Any, kind: Any, example: str, longest: int) -> Any:
        """``raw`` as a network of ``kind`` with at most ``longest`` prefix bits, usable for a lab."""
        try:
            net = kind(raw, strict=True)
        except (ValueError, TypeError):
            version = 4 if kind is ipaddress.IPv4Network else 6
            self.fail(key, f"{short(raw)} is not an IPv{version} subnet (network address/prefix, no host bits "
                           f"set); e.g. {example}")
        if net.prefixlen > longest:
            self.fail(key, f"{short(raw)} is too small; use /{longest} or larger")
        if net.is_link_local or net.is_multicast or net.is_loopback or net.is_unspecified:
            self.fail(key, f"{short(raw)} is not a unicast subnet a lab can use; e.g. {example}")
        return net

    def address6(self, path: str, raw: str | None, net: ipaddress.IPv6Network | None,
                 pool: Iterator[ipaddress.IPv6Address]) -> ipaddress.IPv6Interface | None:
        """An IPv6 address of a dual-stack lab (``address``); None in a lab without IPv6."""
        if net is None:
            if raw is not None:
                self.fail(path, "an IPv6 address needs a dual-stack lab; add `ipv6: true` at the top of the file")
            return None
        return self.address(path, raw, net, pool)

    def default_subnet(self) -> ipaddress.IPv4Network:
        """The file gives no ``subnet``: 198.18.0.0/24, or the smallest larger one at 198.18.0.0 (up to the
        whole /15) that holds every address the lab needs -- 256 VFs and their hosts do not fit a /24."""
        needed = address_count(self.data)
        net = default_subnet(needed)
        if net is None:
            self.fail("hosts", f"the lab needs {needed:,} addresses, more than the default range {DEFAULT_RANGE} "
                               "holds; give a larger 'subnet' (e.g. 10.0.0.0/12)")
        if str(net) != DEFAULT_SUBNET:
            self.subnet_note = f" (the default for {needed:,} addresses; give 'subnet' to choose another)"
        return net

    def address(self, path: str, raw: Any, net: Any, pool: Iterator[Any]) -> Any:
        """``raw`` checked against the lab's subnet ``net`` (IPv4, or IPv6: ``subnet6``), or the next free
        address of ``pool``; every address of the lab is used once."""
        v4 = net.version == 4
        kind, what = (ipaddress.IPv4Interface, "subnet") if v4 else (ipaddress.IPv6Interface, "subnet6")
        if raw is None:
            free = next((ip for ip in pool if ip not in self.addrs), None)  # lazy: a /8 subnet costs nothing
            if free is None:
                self.fail(path, f"no free address left in {what} {net}; give a larger '{what}'")
            ip = kind(f"{free}/{net.prefixlen}")
        else:
            try:
                ip = kind(raw)
            except ValueError:
                example = "198.18.0.1/24" if v4 else "2001:2::10/64"
                self.fail(path, f"{short(raw)} is not an IPv{net.version} address with prefix length (e.g. {example})")
            if "/" not in raw:
                self.fail(path, f"{short(raw)} has no prefix length (e.g. {clip(raw, 40)}/{net.prefixlen})")
            if ip.network != net:
                note = self.subnet_note if v4 else ""
                self.fail(path, f"{raw} is not in the lab {what} {net}{note} (all hosts share one L2 segment)")
            if v4 and ip.ip in (ip.network.network_address, ip.network.broadcast_address):
                self.fail(path, f"{raw} is the network or broadcast address of {ip.network}")
            if not v4 and ip.ip == ip.network.network_address:
                self.fail(path, f"{raw} is the subnet-router anycast address of {ip.network}; pick another")
        if ip.ip in self.addrs:
            self.fail(path, f"address {ip.ip} is already used by {self.addrs[ip.ip]}")
        self.addrs[ip.ip] = path
        return ip

    def explicit_addresses(self) -> None:
        """Reserve every explicitly given address first so automatic ones avoid them."""
        for hname, h in self.data["hosts"].items():
            nic = h.get("nic")
            base = f"hosts.{hname}"
            entries = [h] + ([nic] + (nic["vfs"] if isinstance(nic.get("vfs"), list) else []) if nic else [])
            for entry in entries:
                for key, kind in (("address", ipaddress.IPv4Interface), ("address6", ipaddress.IPv6Interface)):
                    raw = entry.get(key)
                    if raw is not None:
                        try:
                            self.reserved.add(kind(raw).ip)
                        except ValueError:
                            pass  # reported with its path when that entry is built

    def bond(self, path: str, raw: dict, ports: Tuple[str, ...]) -> Bond:
        mode = raw["mode"]
        if "primary" in raw:
            if mode != "active-backup":
                self.fail(f"{path}.primary", f"'primary' only applies to mode active-backup (mode is {mode})")
            if raw["primary"] not in ports:
                allowed = ", ".join(ports)
                self.fail(f"{path}.primary", f"{short(raw['primary'])} is not a port of this NIC; one of: {allowed}")
        for opt in options.BOND_OPTIONS:
            if opt.name in raw and opt.modes and mode not in opt.modes:
                self.fail(f"{path}.{opt.name}", opt.not_for(mode))
        if raw.get("min_links", 0) > len(ports):
            self.fail(f"{path}.min_links", f"{raw['min_links']} is more than the NIC's {len(ports)} ports")
        miimon = self.link_monitor(path, raw)
        for key in ("updelay", "downdelay", "peer_notify_delay"):
            val = raw.get(key, 0)
            if val and not miimon:
                self.fail(f"{path}.{key}", f"{val} needs miimon; the bond refuses it with the ARP/NS monitor "
                                           "(drop it, or monitor with miimon instead)")
            if val and val % miimon:
                self.fail(f"{path}.{key}", f"{val} is not a multiple of miimon ({miimon}); the bond would round it")
        if raw.get("num_grat_arp", raw.get("num_unsol_na")) != raw.get("num_unsol_na", raw.get("num_grat_arp")):
            self.fail(f"{path}.num_unsol_na", "num_grat_arp and num_unsol_na are one setting of the bond; "
                                              "give one, or both with the same value")
        own = {"mode", "miimon", "updelay", "downdelay", "primary", "primary_reselect", "xmit_hash_policy",
               "lacp_rate", "min_links", "ports"}
        settings = tuple((k, self.bond_value(f"{path}.{k}", k, v)) for k, v in raw.items() if k not in own)
        return Bond(mode=mode, miimon=miimon, updelay=raw.get("updelay", 0), downdelay=raw.get("downdelay", 0),
                    primary=raw.get("primary"), primary_reselect=raw.get("primary_reselect"),
                    xmit_hash_policy=raw.get("xmit_hash_policy"), lacp_rate=raw.get("lacp_rate"),
                    min_links=raw.get("min_links"), settings=settings,
                    port_settings=self.bond_ports(f"{path}.ports", raw.get("ports", {}), ports, mode))

    def bond_value(self, path: str, name: str, value: object) -> object:
        """A value the schema let through, checked by the option table (addresses) and kept as the table
        encodes it (addresses normalized, as a tuple)."""
        try:
            encoded = options.option(name).encode(value)  # type: ignore[arg-type]
        except UsageError as exc:
            self.fail(path, exc.message.split(": ", 1)[-1] + (f"; {exc.fix}" if exc.fix else ""))
        return encoded if isinstance(encoded, tuple) else value

    def link_monitor(self, path: str, raw: dict) -> int:
        """The bond's link monitor: miimon (default 100) or the ARP/NS monitor (arp_interval + targets,
        miimon 0); returns miimon."""
        arp = raw.get("arp_interval", 0)
        targets = [k for k in ("arp_ip_target", "ns_ip6_target") if k in raw]
        if arp and not targets:
            self.fail(f"{path}.arp_interval", "the ARP/NS monitor needs targets: give arp_ip_target (IPv4) "
                                              "or ns_ip6_target (IPv6)")
        for key in targets + [k for k in ("arp_validate", "arp_all_targets") if k in raw]:
            if not arp:
                self.fail(f"{path}.{key}", "only applies with the ARP/NS monitor; give arp_interval (ms) too")
        miimon = raw.get("miimon", 0 if arp else 100)
        if arp and miimon:  # the kernel would silently turn one of them off
            self.fail(f"{path}.miimon", f"{miimon} and arp_interval {arp} exclude each other (the bond turns one "
                                        "off); drop miimon (or give miimon: 0) to monitor by ARP/NS")
        if miimon == 0 and not arp:  # the kernel accepts it and the bond then never notices a dead port
            self.fail(f"{path}.miimon", "0 turns off the bond's link monitoring and the file gives no ARP/NS "
                                        "monitor (arp_interval + arp_ip_target), so it would never fail over; "
                                        "use e.g. miimon: 100 (ms)")
        return miimon

    def bond_ports(self, path: str, raw: dict, ports: Tuple[str, ...], mode: str) -> tuple:
        """``bond.ports``: each port's own options (``prio``, ``ad_actor_port_prio``)."""
        out = []
        for port, opts in raw.items():
            if port not in ports:
                self.fail(f"{path}.{port}", f"{port} is not a port of this NIC; one of: {', '.join(ports)}")
            for name in opts:
                opt = options.option(name)
                if opt.modes and mode not in opt.modes:
                    self.fail(f"{path}.{port}.{name}", opt.not_for(mode))
            out.append((port, tuple(opts.items())))
        return tuple(out)

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

    def nic(self, hname: str, raw: dict, net, pool, net6, pool6) -> Nic:
        path = f"hosts.{hname}.nic"
        ports = tuple(naming.port_name(i) for i in range(raw.get("ports", 2)))
        for p in ports:
            self.ifname(f"{path}.ports", naming.switch_port(hname, p), "switch port")
        bond = self.bond(f"{path}.bond", raw["bond"], ports)
        partners = raw.get("partners", 1)
        if partners > 1 and bond.mode != "802.3ad":
            self.fail(f"{path}.partners", f"two partner switches are an 802.3ad setup (LACP picks the aggregator); "
                                          f"bond mode is {bond.mode}: drop 'partners' or use mode 802.3ad")
        partner_select = raw.get("partner_select", "modulo")
        if partner_select != "modulo" and bond.mode not in options.LAG_MODES:
            self.fail(f"{path}.partner_select", f"the switch has no LAG toward an {bond.mode} bond (its ports are "
                                                "plain bridge ports); drop 'partner_select' or use balance-xor "
                                                "or 802.3ad")
        if bond.mode in options.LAG_MODES:
            for i in range(partners):
                self.ifname(f"hosts.{hname}", naming.partner_bond(hname, i), "partner bond")
        offload = self.offload(f"{path}.offload", raw.get("offload", {}), bond)
        mac = self.mac(f"{path}.mac", raw.get("mac"), hname, "bond")
        address = self.address(f"{path}.address", raw.get("address"), net, pool)
        address6 = self.address6(f"{path}.address6", raw.get("address6"), net6, pool6)
        vfs_raw = raw.get("vfs", [])
        if isinstance(vfs_raw, int):
            vfs_raw = [{"name": f"vf{i}"} for i in range(vfs_raw)]
        vfs: List[Function] = []
        names: Dict[str, str] = {}
        for i, vf in enumerate(vfs_raw):
            vpath = f"{path}.vfs[{i}]"
            name = vf["name"]
            if name in names or name in ports or name in (bond.name, naming.HOST_IF, "lo"):
                self.fail(f"{vpath}.name", f"duplicate name {short(name)} on host {hname}")
            names[name] = vpath
            self.ifname(f"{vpath}.name", naming.representor(name), "representor")
            if vf.get("address") == NO_ADDRESS:
                if net6 is None:
                    self.fail(f"{vpath}.address", "'none' (an IPv6-only VF) needs a dual-stack lab; add "
                                                  "`ipv6: true` at the top of the file")
                addr = None
            else:
                addr = self.address(f"{vpath}.address", vf.get("address"), net, pool)
            addr6 = self.address6(f"{vpath}.address6", vf.get("address6"), net6, pool6)
            vfs.append(Function(name=name, mac=self.mac(f"{vpath}.mac", vf.get("mac"), hname, name),
                                address=addr, netns=naming.vf_netns(self.lab, hname, name),
                                verbs=bool(vf.get("verbs", False)), address6=addr6))
        rdma = None
        rraw = raw.get("rdma", False)
        if rraw:
            name = rraw.get("name", "rdma0") if isinstance(rraw, dict) else "rdma0"
            verbs = bool(rraw.get("verbs", False)) if isinstance(rraw, dict) else False
            if name in names or name in ports:
                self.fail(f"{path}.rdma.name", f"duplicate name {short(name)} on host {hname}")
            self.ifname(f"{path}.rdma.name", naming.representor(name), "representor")
            # The RDMA function speaks with the bond's own MAC and address, as RoCE does on a real NIC.
            rdma = Function(name=name, mac=mac, address=address, netns=naming.vf_netns(self.lab, hname, name),
                            kind="rdma", verbs=verbs, address6=address6)
        return Nic(ports=ports, bond=bond, address=address, mac=mac, offload=offload,
                   vfs=tuple(vfs), rdma=rdma, address6=address6, partners=partners, partner_select=partner_select)

    def build(self, file: str) -> Topology:
        net, net6 = self.subnet(), self.subnet6()
        self.reserved: set = set()
        self.explicit_addresses()
        pool = (ip for ip in net.hosts() if ip not in self.reserved)
        pool6 = (ip for ip in (net6.hosts() if net6 else ()) if ip not in self.reserved)
        hosts = []
        for hname, h in self.data["hosts"].items():
            if hname == naming.SWITCH:
                self.fail(f"hosts.{hname}", f"{short(hname)} is reserved for the lab's switch; pick another host name")
            netns = naming.host_netns(self.lab, hname)
            if "nic" in h:
                if "address" in h:
                    self.fail(f"hosts.{hname}.address", "a NIC host's address goes in nic.address (the bond's)")
                if "mac" in h:
                    self.fail(f"hosts.{hname}.mac", "a NIC host's MAC goes in nic.mac (the bond's)")
                if "address6" in h:
                    self.fail(f"hosts.{hname}.address6", "a NIC host's IPv6 address goes in nic.address6 (the bond's)")
                nic = self.nic(hname, h["nic"], net, pool, net6, pool6)
                addr, addr6, mac = nic.address, nic.address6, nic.mac
            else:
                self.ifname(f"hosts.{hname}", naming.switch_port(hname, naming.HOST_IF), "switch port")
                nic = None
                mac = self.mac(f"hosts.{hname}.mac", h.get("mac"), hname, naming.HOST_IF)
                addr = self.address(f"hosts.{hname}.address", h.get("address"), net, pool)
                addr6 = self.address6(f"hosts.{hname}.address6", h.get("address6"), net6, pool6)
            if "verbs" in h and nic is not None:
                self.fail(f"hosts.{hname}.verbs", "a NIC host's verbs devices go on its functions "
                                                  "(nic.rdma.verbs, nic.vfs[i].verbs)")
            hosts.append(Host(name=hname, netns=netns, address=addr, mac=mac, nic=nic,
                              verbs=bool(h.get("verbs", False)), address6=addr6))
        return Topology(name=self.lab, file=file, subnet=net, hosts=tuple(hosts),
                        description=self.data.get("description", ""), raw=self.data, subnet6=net6)


def address_count(data: dict) -> int:
    """How many addresses a schema-valid topology needs: one per host (a NIC host's bond; its RDMA function
    shares it) and one per VF."""
    count = 0
    for h in data["hosts"].values():
        vfs = h.get("nic", {}).get("vfs", [])
        count += 1 + (vfs if isinstance(vfs, int) else len(vfs))
    return count


def default_subnet(needed: int) -> ipaddress.IPv4Network | None:
    """The smallest of 198.18.0.0/24, /23, ... /15 with ``needed`` host addresses (None: not even the /15)."""
    first = ipaddress.IPv4Network(DEFAULT_SUBNET)
    for prefix in range(first.prefixlen, ipaddress.IPv4Network(DEFAULT_RANGE).prefixlen - 1, -1):
        net = first.supernet(new_prefix=prefix)
        if net.num_addresses - 2 >= needed:
            return net
    return None


def build_model(data: dict, file: str, *, lab_name: str | None = None) -> Topology:
    lab = lab_name or data["name"]
    if lab_name is not None and not re.match(r"^[a-z][a-z0-9]{0,11}$", lab_name):
        raise TopologyError(file, "name", f"lab name {short(lab_name)} must be a lowercase letter then up to 11 "
                                          "lowercase letters or digits")
    return _Checker(data, file, lab).build(file)
