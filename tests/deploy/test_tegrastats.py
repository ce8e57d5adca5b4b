import pytest
from compressor.deploy.profile.tegrastats import TegrastatsSampler, energy_mj, parse_line

R32 = ("RAM 1504/3956MB (lfb 331x4MB) IRAM 0/252kB(lfb 252kB) CPU [19%@1479,27%@1479,23%@1479,19%@1479] EMC_FREQ 9%@1600 "
       "GR3D_FREQ 99%@921 NVDEC 716 VIC_FREQ 0%@140 APE 25 PLL@39.5C CPU@43.5C PMIC@100C GPU@43C AO@48C thermal@43C "
       "POM_5V_IN 4523/3422 POM_5V_GPU 1113/313 POM_5V_CPU 538/701")  # fmt: skip
R35 = ("01-03-2023 16:10:22 RAM 2257/30536MB (lfb 5392x4MB) SWAP 0/15268MB (cached 0MB) CPU [12%@729,8%@729] EMC_FREQ 0% "
       "GR3D_FREQ 31% CV0@-256C CPU@41.375C Tboard@29C SOC2@39C Tdiode@30.75C SOC0@38.906C CV1@-256C GPU@-256C tj@41.468C "
       "SOC1@38.843C CV2@-256C")  # fmt: skip
R36 = ("07-29-2026 18:00:27 RAM 2272/7620MB (lfb 4x4MB) SWAP 221/3810MB (cached 0MB) CPU [0%@729,0%@1036,0%@1036,0%@1036,0%@729,0%@729] "
       "GR3D_FREQ 0% cpu@54.937C soc2@55.562C soc0@56.156C gpu@55.468C tj@56.656C soc1@56.656C VDD_IN 4673mW/4673mW "
       "VDD_CPU_GPU_CV 527mW/527mW VDD_SOC 1339mW/1339mW")  # fmt: skip


def test_r32_nano():
    s = parse_line(R32)
    assert (s.timestamp, s.ram_used_mb, s.ram_total_mb, s.swap_used_mb) == (None, 1504, 3956, None)
    assert s.cpu == [(19, 1479), (27, 1479), (23, 1479), (19, 1479)]
    assert (s.gpu_load, s.gpu_mhz, s.emc_load) == (99, 921, 9)
    assert s.temps_c == {"PLL": 39.5, "CPU": 43.5, "PMIC": 100.0, "GPU": 43.0, "AO": 48.0, "thermal": 43.0}
    assert s.rails_mw == {"POM_5V_IN": (4523, 3422), "POM_5V_GPU": (1113, 313), "POM_5V_CPU": (538, 701)}
    assert s.total_power_mw == 4523  # the input rail, unit-less on R32 (mW)


def test_r35_agx_orin_sensors_off_and_no_rails():
    s = parse_line(R35)
    assert s.timestamp == "01-03-2023 16:10:22" and (s.ram_used_mb, s.swap_used_mb) == (2257, 0)
    assert s.cpu == [(12, 729), (8, 729)] and (s.gpu_load, s.gpu_mhz) == (31, None)
    assert s.temps_c["CV0"] is None and s.temps_c["GPU"] is None and s.temps_c["tj"] == 41.468
    assert s.rails_mw == {} and s.total_power_mw is None


def test_r36_orin_nano_mw_rails():
    s = parse_line(R36)
    assert s.timestamp == "07-29-2026 18:00:27" and s.ram_total_mb == 7620 and len(s.cpu) == 6
    assert s.rails_mw == {"VDD_IN": (4673, 4673), "VDD_CPU_GPU_CV": (527, 527), "VDD_SOC": (1339, 1339)}
    assert s.total_power_mw == 4673 and s.temps_c["gpu"] == 55.468


def test_sum_of_rails_without_an_input_rail():
    s = parse_line("RAM 1/2MB GR3D_FREQ 5% VDD_GPU_SOC 3000mW/2900mW VDD_CPU_CV 1000mW/900mW VDDQ_VDD2_1V8AO 500mW/500mW")
    assert s.total_power_mw == 4500


def test_off_cores_and_garbage():
    assert parse_line("RAM 1/2MB CPU [off,3%@100]").cpu == [(None, None), (3, 100)]
    with pytest.raises(ValueError, match="not a tegrastats line"):
        parse_line("hello")


def test_energy_integral():
    # constant 2000 mW for 3 s = 6000 mJ; a ramp 0 -> 1000 mW over 2 s = 1000 mJ
    assert energy_mj([0, 1, 2, 3], [2000] * 4) == pytest.approx(6000)
    assert energy_mj([0, 2], [0, 1000]) == pytest.approx(1000)
    assert energy_mj([0], [5]) == 0.0


def test_sampler_summary_reports_power_energy_and_the_ram_the_window_added():
    sampler = TegrastatsSampler()
    lines = [R36.replace("RAM 2272/7620MB", f"RAM {ram}/7620MB") for ram in (2272, 2300, 2350, 2310)]
    sampler.samples = [(0.05 * i, parse_line(line)) for i, line in enumerate(lines)]
    summary = sampler.summary(inferences=30)
    assert summary["ram_peak_mb"] == 2350 and summary["ram_delta_mb"] == 2350 - 2272
    assert summary["energy_per_inference_mj"] == pytest.approx(summary["energy_mj"] / 30) and summary["mean_power_mw"] > 0
