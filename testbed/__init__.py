"""testbed: emulate LAG with hardware offload for RDMA and SR-IOV VFs in network namespaces."""

__version__ = "0.1.0"
