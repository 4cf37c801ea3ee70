"""The config's sections: each parses its own keys, and together they are the settings."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import pytest

from components import config
from components.config import ConfigError, ControlPlaneSettings, parse_settings

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

SECTIONS = (
    config.IdentitySection,
    config.ImageSection,
    config.NetworkSection,
    config.ExposureSection,
    config.EtcdSection,
    config.ApiServerSection,
    config.ControllerManagerSection,
    config.SchedulerSection,
    config.NetworkPolicySection,
    config.PkiSection,
    config.AddOnSection,
    config.WorkerSection,
    config.LifecycleSection,
)


def test_every_setting_comes_from_exactly_one_section() -> None:
    section_fields = [f.name for section in SECTIONS for f in dataclasses.fields(section)]
    assert len(section_fields) == len(set(section_fields))
    assert set(section_fields) == {f.name for f in dataclasses.fields(ControlPlaneSettings)}


def test_sections_are_frozen() -> None:
    c = config.Collector({})
    exposure = config.parse_exposure(c)
    parsed: list[DataclassInstance] = [
        exposure,
        config.parse_identity(c),
        config.parse_images(c),
        config.parse_network(c),
        config.parse_etcd(c),
        config.parse_api_server(c),
        config.parse_controller_manager(c),
        config.parse_scheduler(c),
        config.parse_network_policies(c),
        config.parse_pki(c),
        config.parse_add_ons(c, exposure.exposure),
        config.parse_workers(c),
        config.parse_lifecycle(c),
    ]
    assert c.errors == []
    assert sorted(type(section).__name__ for section in parsed) == sorted(
        section.__name__ for section in SECTIONS
    )
    for section in parsed:
        name = dataclasses.fields(section)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(section, name, None)


def test_a_section_parser_reads_only_its_keys() -> None:
    collector = config.Collector({"etcdReplicas": "3", "apiServerReplicas": "0"})
    etcd = config.parse_etcd(collector)
    assert etcd.etcd_replicas == 3
    assert collector.errors == [], "the apiserver's bad key is not the etcd parser's business"
    config.parse_api_server(collector)
    assert len(collector.errors) == 1 and "apiServerReplicas" in collector.errors[0]


def test_a_field_in_two_sections_is_a_programming_error() -> None:
    twice = config.parse_etcd(config.Collector({}))
    with pytest.raises(TypeError, match="etcd_replicas is in two sections"):
        config.settings_of(twice, twice)


def test_cross_section_rules_still_apply() -> None:
    """Konnectivity (add-ons) depends on the exposure section's mode and node port."""
    with pytest.raises(ConfigError, match="konnectivityNodePort"):
        parse_settings(
            {"exposure": "nodePort", "apiHost": "192.0.2.1", "nodePort": "31000"}
            | {"konnectivityNodePort": "31000"}
        )
