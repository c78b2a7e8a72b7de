"""advisor: ML-driven placement and rebalancing advisor for KVM/libvirt fleets."""

__version__ = "0.1.0"
