import pytest

from device_bench.profiles import (
    Cluster,
    DeviceProfile,
    clusters_from_policies,
    identify_soc,
    parse_cpu_list,
    parse_getprop,
    parse_thermal_status,
)

SM8450_GETPROP = "[ro.product.model]: [SM-S901B]\n[ro.soc.model]: [SM8450]\n[ro.board.platform]: [taro]\n"
# SM8450: policies 0 (4x A510 1.8 GHz), 4 (3x A710 2.5 GHz), 7 (1x X2 3.0 GHz)
SM8450_POLICIES = {"policy0": ("0 1 2 3", "1785600"), "policy4": ("4 5 6", "2496000"), "policy7": ("7", "2995200")}
# MT6893: policies 0 (4x A55 2.0 GHz), 4 (3x A78 2.6 GHz), 7 (1x A78 3.0 GHz)
MT6893_POLICIES = {"policy7": ("7", "3000000"), "policy0": ("0-3", "2000000"), "policy4": ("4-6", "2600000")}


def test_getprop_and_soc_identification():
    props = parse_getprop(SM8450_GETPROP)
    assert props["ro.soc.model"] == "SM8450" and identify_soc(props) == ("SM8450", True)
    assert identify_soc({"ro.board.platform": "taro"}) == ("SM8450", True)
    assert identify_soc({"ro.soc.model": "", "ro.hardware": "mt6893"}) == ("MT6893", True)
    assert identify_soc({"ro.soc.model": "SM8550"}) == ("SM8550", False)
    assert identify_soc({}) == ("unknown", False)


@pytest.mark.parametrize(("policies", "masks"), [
    (SM8450_POLICIES, ["f", "70", "80"]),
    (MT6893_POLICIES, ["f", "70", "80"]),
    ({"policy0": ("0-5", "1800000"), "policy6": ("6 7", "2200000")}, ["3f", "c0"]),  # an unknown two-cluster chip
])  # fmt: skip
def test_clusters_and_taskset_masks(policies, masks):
    clusters = clusters_from_policies(policies)
    assert [c.mask for c in clusters] == masks
    assert [c.max_khz for c in clusters] == sorted(c.max_khz for c in clusters)


def test_cluster_names():
    clusters = clusters_from_policies(SM8450_POLICIES)
    profile = DeviceProfile("127.0.0.1:5555", "SM-S901B", "SM8450", clusters, known=True)
    assert profile.cluster("prime").cpus == (7,) and profile.cluster("big").cpus == (4, 5, 6)
    assert profile.cluster("little").mask == "f"
    two = DeviceProfile("x", "m", "?", (Cluster((0, 1), 1), Cluster((2, 3), 2)))
    assert two.cluster("big").cpus == (2, 3)
    with pytest.raises(ValueError, match="unknown cluster"):
        profile.cluster("medium")


def test_cpu_lists():
    assert parse_cpu_list("0-3,7") == (0, 1, 2, 3, 7) and parse_cpu_list("4 5 6\n") == (4, 5, 6)


def test_thermal_status_reads_only_the_hal_block():
    dumpsys = (
        "IsStatusOverride: false\n"
        "Thermal Status: 2\n"
        "Cached temperatures:\n"
        "\tTemperature{mValue=30.0, mType=0, mName=CPU0, mStatus=0}\n"
        "HAL Ready: true\n"
        "Current temperatures from HAL:\n"
        "\tTemperature{mValue=62.5, mType=0, mName=CPU0, mStatus=0}\n"
        "\tTemperature{mValue=48.1, mType=2, mName=battery, mStatus=0}\n"
        "Current cooling devices from HAL:\n"
        "\tCoolingDevice{mValue=0, mType=2, mName=cpu0}\n"
    )
    status, temps = parse_thermal_status(dumpsys)
    assert status == 2 and temps == {"CPU0": 62.5, "battery": 48.1}
