"""A Pulumi program with N control planes (N from BENCH_CONTROL_PLANES), for the benchmark."""

import os

import pulumi_kubernetes as k8s

from components.config import parse_settings
from components.controlplane import ControlPlane

count = int(os.environ["BENCH_CONTROL_PLANES"])
provider = k8s.Provider("infra")
for index in range(count):
    settings = parse_settings({"clusterName": f"cp{index}", "namespace": f"tenant-{index}"})
    ControlPlane(settings.cluster_name, settings, provider)
