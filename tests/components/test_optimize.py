"""Device variants: structured pruning really shrinks the model, int8 files stay
within the accuracy budget in their runtime, and the gate, the device profiles and
the infra-validation say why a variant may not ship."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from components.config import (
    DeviceProfile,
    OptimizeConfig,
    SplitConfig,
    TrainConfig,
)
from components.optimization import compress
from components.optimization.choice import ship_per_profile
from components.optimization.optimize import (
    infra_validate,
    optimize_model,
    profile_problem,
)
from components.optimization.report import VariantReport, write_report
from components.optimization.runtime import load_runtime, predict
from components.training.model import TorchClassifier
from components.training.torch_train import Arrays, train_torch
from tests.conftest import default_params_dict, digits_subset


@pytest.fixture(scope="module")
def trained() -> tuple[TorchClassifier, Arrays, Arrays]:
    data = digits_subset(1797, SplitConfig(), hidden_units=64)
    result = train_torch(
        data.train, data.val, data.spec, TrainConfig(epochs=15, learning_rate=0.002)
    )
    return TorchClassifier(result.model, data.spec), data.train, data.test


def _acc(classifier, data: Arrays) -> float:
    return float((classifier.predict_proba(data.x).argmax(1) == data.y).mean())


def test_structured_pruning_removes_channels_and_units(trained):
    classifier, _, test = trained
    pruned = compress.prune_structured(classifier.model, 0.5)
    convs = [m for m in pruned if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16]
    assert compress.count_parameters(pruned) < 0.3 * compress.count_parameters(
        classifier.model
    )
    assert compress.count_macs(pruned, 64) < 0.3 * compress.count_macs(
        classifier.model, 64
    )
    assert pruned(torch.from_numpy(test.x[:4])).shape == (4, 10)


def test_int8_static_onnx_is_smaller_and_within_a_point(trained, tmp_path: Path):
    classifier, train, test = trained
    fp32 = compress.export_onnx(classifier.model, 64, tmp_path / "fp32.onnx")
    int8 = compress.quantize_int8_static(fp32, tmp_path / "int8.onnx", train.x[:200])
    runtime_fp32, runtime_int8 = load_runtime(fp32), load_runtime(int8)
    acc_fp32 = float((predict(runtime_fp32, test.x) == test.y).mean())
    acc_int8 = float((predict(runtime_int8, test.x) == test.y).mean())
    assert acc_fp32 == pytest.approx(_acc(classifier, test), abs=1e-9)
    assert acc_fp32 - acc_int8 <= 0.01
    assert int8.stat().st_size < 0.4 * fp32.stat().st_size


def test_infra_validation_refuses_a_process_without_enough_memory(trained, tmp_path):
    classifier, _, test = trained
    fp32 = compress.export_onnx(classifier.model, 64, tmp_path / "fp32.onnx")
    expected = predict(load_runtime(fp32), test.x[:4])
    assert infra_validate(fp32, test.x[:4], expected, memory_mb=512) is None
    problem = infra_validate(fp32, test.x[:4], expected, memory_mb=64)
    assert problem is not None and "runtime" in problem
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(fp32.read_bytes()[:2000])
    assert "could not load" in infra_validate(broken, test.x[:4], expected, None)


def test_profiles_name_the_budget_a_variant_breaks():
    report = VariantReport(
        "int8",
        "int8.onnx",
        60_000,
        40_000,
        38_000,
        330_000,
        0.97,
        0.005,
        0.01,
        0.02,
        400.0,
        True,
        "",
    )
    assert profile_problem(report, DeviceProfile(max_model_kb=32)) == (
        "file 59 KB > max_model_kb 32"
    )
    assert profile_problem(report, DeviceProfile(max_ram_kb=320)) == (
        "estimated RAM 400 KB > max_ram_kb 320"
    )
    assert profile_problem(report, DeviceProfile()) is None


def _variant(name: str, kb: float, ms: dict[str, float], accepted=True):
    return VariantReport(
        name, f"{name}.onnx", int(kb * 1024), 0, 0, 0, 0.97, 0.0, 0.0, 0.0, 1.0,
        accepted, "", deployable_to=list(ms), latency_ms_by_profile=ms,
    )  # fmt: skip


PROFILES = {"mcu": DeviceProfile(max_model_kb=64), "gateway": DeviceProfile(threads=4)}


def test_a_profile_whose_measured_best_is_fp32_gets_fp32_despite_ship_variant():
    """On a CPU where int8 kernels do not pay (no VNNI, a small model), the int8
    file is slower: that profile gets fp32 though ship_variant says int8_static;
    where fp32 does not fit (mcu: 64 KB), the fastest file that fits."""
    reports = [
        _variant("fp32", 120, {"gateway": 0.030}),  # too big for mcu
        _variant("int8_static", 40, {"mcu": 0.060, "gateway": 0.045}),
        _variant("pruned_int8_static", 20, {"mcu": 0.050, "gateway": 0.041}),
    ]
    cfg = OptimizeConfig(ship_variant="int8_static", profiles=PROFILES)
    chosen = ship_per_profile(reports, cfg)
    assert chosen["gateway"]["variant"] == "fp32"
    assert chosen["gateway"]["measured_ms"] == {
        "fp32": 0.030,
        "int8_static": 0.045,
        "pruned_int8_static": 0.041,
    }
    assert chosen["gateway"]["threads"] == 4
    assert chosen["mcu"]["variant"] == "pruned_int8_static"
    assert chosen["mcu"]["why"].startswith("fastest of 2 fitting variants")
    fixed = ship_per_profile(reports, cfg.model_copy(update={"ship_choice": "fixed"}))
    assert fixed["gateway"]["variant"] == fixed["mcu"]["variant"] == "int8_static"


def test_within_the_latency_tie_the_smaller_file_wins_and_rejected_never_ships():
    reports = [
        _variant("fp32", 120, {"mcu": 0.040, "gateway": 0.040}),
        _variant("pruned", 100, {"mcu": 0.039, "gateway": 0.061}),
        _variant("int8_static", 40, {"mcu": 0.040, "gateway": 0.041}),
        _variant("int8_dynamic", 30, {}, accepted=False),  # failed the gate: nowhere
    ]
    chosen = ship_per_profile(reports, OptimizeConfig(profiles=PROFILES))
    # 2.6% slower than the fastest, as fast as fp32, a third of its size.
    assert chosen["mcu"]["variant"] == "int8_static"
    assert (
        "the smallest of 3 within latency_tie 0.05 and not slower than fp32"
        in chosen["mcu"]["why"]
    )
    # Within the tie of fp32 but slower than it: the smaller file does not win.
    assert chosen["gateway"]["variant"] == "fp32"
    nothing = ship_per_profile([reports[3]], OptimizeConfig(profiles=PROFILES))
    assert nothing["mcu"] == nothing["mcu"] | {
        "variant": None,
        "why": "no accepted variant fits this profile",
    }


@pytest.mark.slow
def test_optimize_stage_gates_and_reports(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import yaml

    from components.data import prepare, validate
    from components.evaluation import evaluate
    from components.training import train

    raw = default_params_dict(
        train={"epochs": 10},
        optimize={
            "latency_runs": 20,
            "finetune_epochs": 0,
            "prune_amount": 0.9,
            "max_accuracy_drop": 0.01,
            "profiles": {
                "tiny": {"max_model_kb": 40, "runtime_memory_mb": 256},
                "cloud": {"threads": 2},
                "board": {"runtime": "micro", "max_flash_kb": 768, "max_arena_kb": 192},
            },
        },
    )
    Path("params.yaml").write_text(yaml.safe_dump(raw))
    for stage in (prepare, validate, train, evaluate):
        assert stage.main([]) == 0
    from components.config import load_params

    params = load_params(Path("params.yaml"))
    reference, reports = optimize_model(
        params, Path("models/model"), Path("data/prepared"), Path("models/variants")
    )
    by_name = {r.name: r for r in reports}
    assert set(by_name) == {
        "fp32",
        "int8_static",
        "int8_dynamic",
        "pruned",
        "pruned_int8_static",
        "micro_int8",  # TFLM's file, for the board
    }
    pruned = by_name["pruned"]  # 90% of channels gone, no fine-tuning: rejected
    assert not pruned.accepted and "> optimize.max_accuracy_drop 1.00" in pruned.reason
    assert pruned.not_deployable == {
        "tiny": pruned.reason,
        "cloud": pruned.reason,
        "board": pruned.reason,
    }
    fp32, int8 = by_name["fp32"], by_name["int8_static"]
    assert fp32.accepted and fp32.deployable_to == ["cloud"]
    assert "max_model_kb 40" in fp32.not_deployable["tiny"]
    assert fp32.not_deployable["board"].startswith("runtime micro runs a full-integer")
    tflm = by_name["micro_int8"]  # measured in TFLM: its arena and its ops
    assert tflm.file == "int8.micro.tflite" and 1000 < tflm.arena_bytes < 64 * 1024
    assert {"CONV_2D", "FULLY_CONNECTED"} <= set(tflm.ops)
    assert tflm.deployable_to == (["board"] if tflm.accepted else [])
    if int8.accepted:
        assert int8.deployable_to == ["cloud"] or "tiny" in int8.deployable_to
    # Each deployable profile timed in its runtime with its threads; the choice
    # is a variant that fits, recorded with the measurements.
    assert set(fp32.latency_ms_by_profile) == {"cloud"}
    assert all(ms > 0 for ms in fp32.latency_ms_by_profile.values())
    chosen = ship_per_profile(reports, params.optimize)
    fitting = {r.name for r in reports if "cloud" in r.deployable_to}
    assert chosen["cloud"]["variant"] in fitting
    assert set(chosen["cloud"]["measured_ms"]) == fitting
    assert chosen["cloud"]["threads"] == 2
    if tflm.accepted:  # the board's file against its budgets, in bytes
        assert chosen["board"]["variant"] == "micro_int8"
        assert (
            f"flash {tflm.size_bytes} of 786432 bytes, arena {tflm.arena_bytes} "
            f"(+10%: " in chosen["board"]["why"]
        ), chosen["board"]
        assert chosen["board"]["why"].endswith(" of 196608 bytes")
    write_report(
        reference, reports, "int8_static", Path("reports/optimize"), None, chosen
    )
    assert "REJECTED" in Path("reports/optimize/report.md").read_text()
    [row] = [
        line
        for line in Path("reports/optimize/report.md").read_text().splitlines()
        if line.startswith("| micro_int8 |")
    ]
    assert row.split(" | ")[3] == f"{tflm.arena_bytes / 1024:.1f}", row  # arena KB
    assert "- cloud: **" in Path("reports/optimize/report.md").read_text()
    assert Path("reports/optimize/tradeoff.png").stat().st_size > 1000


def test_one_row_on_a_small_test_set_is_not_evidence():
    """The cars table: its int8 file lost one test row of 61 (1.6 points) against a
    1-point budget and was refused, so passing hinged on a single row. The drop is
    now judged paired (exact McNemar on the rows the two answer differently)."""
    from components.evaluation.paired import PairedDrop

    y = np.zeros(61, dtype=int)
    reference, variant = y.copy(), y.copy()
    variant[0] = 1
    one = PairedDrop.of(reference, variant, y)
    assert (one.worse, one.better) == (1, 0) and one.drop == pytest.approx(1 / 61)
    assert one.p_value == pytest.approx(0.5) and not one.refused(0.01, 0.05)
    variant[:5] = 1  # five rows, all against the variant: beyond chance
    five = PairedDrop.of(reference, variant, y)
    assert five.p_value == pytest.approx(0.5**5) and five.refused(0.01, 0.05)
    reference[5:7] = 1  # two rows the variant gets right and the model wrong
    mixed = PairedDrop.of(reference, variant, y)
    assert (mixed.worse, mixed.better) == (5, 2) and mixed.drop == pytest.approx(3 / 61)
    assert not mixed.refused(0.01, 0.05)  # 5 of 7 against it: p = 0.23
    big = np.zeros(1000, dtype=int)
    within = big.copy()
    within[:8] = 1  # 0.8 points: inside the budget, however sure the test is
    assert not PairedDrop.of(big, within, big).refused(0.01, 0.05)
