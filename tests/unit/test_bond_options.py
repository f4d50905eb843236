"""The bond option table: one place for names, IFLA_BOND_* attributes, values, and where they apply."""

from __future__ import annotations

import json
import os

import pytest

from testbed import loader, realize
from testbed.bond import options
from testbed.errors import UsageError
from testbed.topology import Bond

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_kernel_numbers_follow_uapi():
    # include/uapi/linux/if_bonding.h BOND_MODE_*, BOND_XMIT_POLICY_*, BOND_PRI_RESELECT_*
    assert options.MODE["active-backup"] == 1 and options.MODE["balance-xor"] == 2 and options.MODE["802.3ad"] == 4
    assert [options.XMIT_HASH[n] for n in ("layer2", "layer3+4", "layer2+3", "encap2+3", "encap3+4")] == [0, 1, 2, 3, 4]
    assert options.PRIMARY_RESELECT["failure"] == 2 and options.LACP_RATE["fast"] == 1
    assert options.option("xmit_hash_policy").keyword == "bond_xmit_hash_policy"
    assert options.option("lacp_rate").keyword == "bond_ad_lacp_rate"


def test_attrs_of_a_bond_are_the_ifla_keywords_realize_sends():
    lacp = Bond(mode="802.3ad", miimon=50, updelay=100, xmit_hash_policy="layer3+4", lacp_rate="fast", min_links=1)
    assert realize.bond_options(lacp) == {"bond_mode": 4, "bond_miimon": 50, "bond_updelay": 100, "bond_downdelay": 0,
                                          "bond_xmit_hash_policy": 1, "bond_ad_lacp_rate": 1, "bond_min_links": 1}
    ab = Bond(mode="active-backup", miimon=10, primary="pf0", primary_reselect="better")
    assert realize.bond_options(ab) == {"bond_mode": 1, "bond_miimon": 10, "bond_updelay": 0, "bond_downdelay": 0,
                                        "bond_primary_reselect": 1}
    assert realize.partner_options(ab) is None
    assert realize.partner_options(lacp) == {"bond_mode": 4, "bond_miimon": 50, "bond_xmit_hash_policy": 1,
                                             "bond_ad_lacp_rate": 1}
    assert "bond_ad_lacp_rate" not in realize.partner_options(Bond(mode="balance-xor"))


def test_decode_reads_back_what_encode_sends():
    data = {"IFLA_BOND_MODE": 4, "IFLA_BOND_MIIMON": 100, "IFLA_BOND_XMIT_HASH_POLICY": 5,
            "IFLA_BOND_AD_LACP_RATE": 0, "IFLA_BOND_PRIMARY_RESELECT": 9}
    got = options.decode(data)
    assert got["mode"] == "802.3ad" and got["miimon"] == 100 and got["lacp_rate"] == "slow"
    assert got["xmit_hash_policy"] == "vlan+srcmac"  # a kernel value no file may ask for still reads back
    assert got["primary_reselect"] == 9  # a number the table does not know stays a number
    assert got["updelay"] is None  # not sent by the kernel


def test_bad_values_are_refused_with_the_allowed_ones():
    with pytest.raises(UsageError, match="one of: layer2, layer3"):
        options.option("xmit_hash_policy").encode("round-robin")
    with pytest.raises(UsageError, match="non-negative integer"):
        options.option("updelay").encode(-1)
    with pytest.raises(UsageError, match="unknown bond option"):
        options.option("arp_missed_max")


def test_the_shipped_schema_file_agrees_with_the_table():
    """The loader validates with the table's values; the schema file users read must say the same."""
    with open(os.path.join(ROOT, "testbed", "schema", "topology.schema.json")) as fh:
        props = json.load(fh)["$defs"]["bond"]["properties"]
    for opt in options.BOND_OPTIONS:
        assert opt.name in props, f"{opt.name} missing from the schema"
        if opt.values is not None:
            assert props[opt.name]["enum"] == list(opt.allowed), opt.name
    assert set(props) == {o.name for o in options.BOND_OPTIONS} | {"ports"}
    port_props = props["ports"]["additionalProperties"]["properties"]
    assert set(port_props) == {o.name for o in options.PORT_OPTIONS}
    assert loader.schema()["$defs"]["bond"]["properties"]["mode"]["enum"] == list(options.FILE_MODES)


@pytest.mark.parametrize("key,value,mode,message", [
    ("lacp_rate", "fast", "balance-xor", "only applies to mode 802.3ad (mode is balance-xor)"),
    ("xmit_hash_policy", "layer2", "active-backup", "does not apply to active-backup; use balance-xor or 802.3ad"),
    ("primary_reselect", "always", "802.3ad", "only applies to mode active-backup (mode is 802.3ad)"),
])
def test_loader_refuses_an_option_for_a_mode_it_does_not_apply_to(tmp_path, key, value, mode, message):
    path = tmp_path / "t.yaml"
    path.write_text(f"name: t\nhosts:\n  server:\n    nic:\n      bond: {{mode: {mode}, {key}: {value}}}\n"
                    "  client: {}\n")
    from testbed.errors import TopologyError

    with pytest.raises(TopologyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        loader.load(str(path))
