"""How the sandbox node lays a container's volumes over its filesystem."""

from __future__ import annotations

from injector.sandbox.podworker import mount_order


def test_a_volume_over_a_parent_of_the_checkout_keeps_the_checkout_in_view() -> None:
    # a clone under /tmp and the control plane's emptyDir on /tmp: its program exited 127
    mounts = mount_order([("/var/lib/node/tmp-vol", "/tmp")], keep=("/tmp/x", "/tmp/x/.venv"))
    assert mounts == [("/tmp/x", "/var/lib/node/tmp-vol/x"), ("/var/lib/node/tmp-vol", "/tmp")]


def test_a_checkout_no_volume_hides_is_left_alone() -> None:
    assert mount_order([("/v", "/tmp")], keep=("/work/main",)) == [("/v", "/tmp")]
    assert mount_order([("/v", "/tmp")], keep=("/tmpfoo/main",)) == [("/v", "/tmp")]
