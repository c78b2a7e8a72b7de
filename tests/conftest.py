"""Shared fixtures. `bed`: two real libvirt/QEMU hosts (testbed/), up once per session, for tests marked
`bed`; `make test` installs what it needs (scripts/install-test-deps.sh)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    missing = [
        tool
        for tool in ("libvirtd", "qemu-system-x86_64", "qemu-img", "ip", "gcc", "cpio")
        if shutil.which(tool) is None
    ]
    if missing or os.geteuid() != 0:
        pytest.fail(
            f"the test bed needs root and {', '.join(missing) or 'nothing else'}: "
            "run `make test` (scripts/install-test-deps.sh) as root"
        )
    from testbed.bed import running_bed

    with running_bed(tmp_path_factory.mktemp("bed")) as the_bed:
        yield the_bed


@pytest.fixture
def clean_bed(bed: object) -> Iterator[object]:
    """The bed, with every guest destroyed after the test."""
    yield bed
    for letter in ("a", "b"):
        bed.destroy_all(letter)  # type: ignore[attr-defined]
