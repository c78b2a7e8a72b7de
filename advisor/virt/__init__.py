"""libvirt plumbing shared by the libvirt collector and the live-migration executor."""
