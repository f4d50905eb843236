"""What the project knows about the Linux bond, below the agent, the lab builder, status and verify.

* ``options`` the one table of bond options: user name <-> ``IFLA_BOND_*`` <-> value, used to set
              (realize), read back (status), validate (loader/schema) and change at run time
* ``wire``    wire format of a bond port's ``IFLA_INFO_SLAVE_DATA`` (what pyroute2 lacks)
* ``state``   the bond and its ports read over netlink -> frozen ``BondState``
* ``ports``   which ports the bond uses now and which it receives on (pure)
"""
