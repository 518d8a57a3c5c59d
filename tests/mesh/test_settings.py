"""The mesh config: defaults, YAML parsing, errors that name the field, and the fingerprint."""

from __future__ import annotations

import pytest

from mesh.errors import SettingsError
from mesh.settings import MeshConfig, config_from_yaml


def test_an_empty_file_gives_the_defaults() -> None:
    assert config_from_yaml("") == MeshConfig()


def test_fields_are_camel_case_in_yaml() -> None:
    config = config_from_yaml(
        "proxy:\n  logLevel: debug\n  drainSeconds: 9\nnativeSidecars: false\n"
    )
    assert config.proxy.log_level == "debug"
    assert config.proxy.drain_seconds == 9
    assert config.native_sidecars is False


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("proxy: {concurrency: 0}", "proxy.concurrency"),
        ("proxy: {logLevel: loud}", "proxy.logLevel"),
        ("unknownField: 1", "unknownField"),
        ("capture: {interceptionMode: NAT}", "capture.interceptionMode"),
    ],
)
def test_a_bad_field_is_named_with_its_value(text: str, named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        config_from_yaml(text)


def test_a_config_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(SettingsError, match="mapping"):
        config_from_yaml("- a\n- b\n")


def test_invalid_yaml_is_refused_with_the_parser_message() -> None:
    with pytest.raises(SettingsError, match="not valid YAML"):
        config_from_yaml("proxy: [unclosed")


def test_the_fingerprint_changes_with_the_config_and_only_then() -> None:
    assert MeshConfig().fingerprint() == MeshConfig().fingerprint()
    changed = config_from_yaml("proxy: {logLevel: debug}")
    assert changed.fingerprint() != MeshConfig().fingerprint()


def test_a_changed_copy_of_a_config_is_fingerprinted_afresh() -> None:
    config = MeshConfig()
    before = config.fingerprint()
    changed = config.model_copy(update={"native_sidecars": False})
    assert changed.fingerprint() != before
    assert changed.fingerprint() == MeshConfig(native_sidecars=False).fingerprint()
    assert hash(changed) == hash(MeshConfig(native_sidecars=False))
    assert config.model_copy().fingerprint() == before


@pytest.mark.parametrize(("text", "named"), [
    ("proxy: {resources: {cpu: 3, cpuLimit: 2}}", "cpu 3 is above cpuLimit 2"),
    ("init: {resources: {memory: 1Gi, memoryLimit: 64Mi}}", "memory 1Gi is above memoryLimit 64Mi"),
    ("proxy: {resources: {cpu: lots}}", "cpu: 'lots' is not a Kubernetes quantity"),
    ("proxy: {resources: {memoryLimit: -1Gi}}", "memoryLimit: '-1Gi' is negative"),
])
def test_resources_the_api_server_would_refuse_are_refused_in_the_mesh_config(
    text: str, named: str
) -> None:
    with pytest.raises(SettingsError, match=named):
        config_from_yaml(text)


def test_resources_in_other_units_that_agree_are_accepted() -> None:
    config = config_from_yaml("proxy: {resources: {cpu: '0.5', cpuLimit: 500m, memory: 1e9,"
                              " memoryLimit: 1Gi}}")
    assert config.proxy.resources.cpu_limit == "500m"
