"""What the project knows about the Linux bond, below the agent, the lab builder, status and verify.

* ``options`` the one table of bond options: user name <-> ``IFLA_BOND_*`` <-> value, used to set
              (realize), read back (status), validate (loader/schema) and change at run time
* ``wire``    wire format of a bond's ``IFLA_INFO_DATA`` and a port's ``IFLA_INFO_SLAVE_DATA`` (what pyroute2 lacks)
* ``kernel``  refuse an option the running kernel's bonding module does not know
* ``state``   the bond and its ports read over netlink -> frozen ``BondState``
* ``ports``   which ports the bond uses now and which it receives on (pure)
"""
