"""Stage `optimize`: the device variants of the trained model (ONNX fp32, pruned,
int8 static/dynamic for PyTorch; TFLite fp32/fp16/int8 for Keras), each measured in
the runtime a device would use (size, parameters, MACs, latency, accuracy), gated on
accuracy drop, checked against the device profiles, and infra-validated in a
separate process under each profile's memory limit."""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from components.backends import load_classifier
from components.config import DeviceProfile, OptimizeConfig, Params
from components.evaluation.paired import PairedDrop
from components.optimization import compress, micro
from components.optimization.choice import ship_per_profile, with_margin
from components.optimization.report import VariantReport, write_report
from components.optimization.runtime import (
    ArenaReport,
    load_runtime,
    measure_arena,
    predict,
    single_sample_latency,
    stamp_classes,
)
from components.stage import exit_with, run_stage, stage_parser
from components.training.inputs import to_arrays
from components.training.model import (
    Classifier,
    TorchClassifier,
    load_spec,
)
from components.training.torch_train import Arrays, loader_for, train_epoch

log = logging.getLogger("edgeloop.optimize")


@dataclass(frozen=True)
class Built:
    """A variant file and what is known of it before it is measured."""

    name: str
    path: Path
    parameters: int
    macs: int
    weight_bytes_per_param: int
    peak_activations: int
    arena: ArenaReport | None = None  # a TFLM file's, as TFLM measured it


def _finetune(model: object, train: Arrays, epochs: int, lr: float, seed: int) -> None:
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=lr)  # type: ignore[attr-defined]
    loader = loader_for(train, 64, seed)
    for _ in range(epochs):
        train_epoch(model, loader, optimizer)  # type: ignore[arg-type]
    model.eval()  # type: ignore[attr-defined]


def build_torch_variants(
    classifier: TorchClassifier,
    train: Arrays,
    cfg: OptimizeConfig,
    out: Path,
    *,
    lr: float,
    seed: int,
) -> list[Built]:
    model, n = classifier.model, classifier.spec.n_features
    calibration = train.x[: cfg.calibration_samples]
    pruned = compress.prune_structured(model, cfg.prune_amount)
    if cfg.finetune_epochs:
        _finetune(pruned, train, cfg.finetune_epochs, lr, seed)
    full = (
        compress.count_parameters(model),
        compress.count_macs(model, n),
        compress.peak_activation_elements(model, n),
    )
    small = (
        compress.count_parameters(pruned),
        compress.count_macs(pruned, n),
        compress.peak_activation_elements(pruned, n),
    )
    fp32 = compress.export_onnx(model, n, out / "fp32.onnx")
    pruned_fp32 = compress.export_onnx(pruned, n, out / "pruned.onnx")
    tiny = _micro_variant(
        lambda: micro.convert_torch(
            model, n, classifier.spec.image_shape, calibration, out
        ),
        full,
    )
    return tiny + [
        Built("fp32", fp32, full[0], full[1], 4, full[2]),
        Built(
            "int8_static",
            compress.quantize_int8_static(fp32, out / "int8_static.onnx", calibration),
            full[0],
            full[1],
            1,
            full[2],
        ),
        Built(
            "int8_dynamic",
            compress.quantize_int8_dynamic(fp32, out / "int8_dynamic.onnx"),
            full[0],
            full[1],
            1,
            full[2],
        ),
        Built("pruned", pruned_fp32, small[0], small[1], 4, small[2]),
        Built(
            "pruned_int8_static",
            compress.quantize_int8_static(
                pruned_fp32, out / "pruned_int8_static.onnx", calibration
            ),
            small[0],
            small[1],
            1,
            small[2],
        ),
    ]


def _micro_variant(
    make: Callable[[], Path], shape: tuple[int, int, int]
) -> list[Built]:
    """The TFLM file with its measured arena, or none where the converter could
    not make one or TFLM cannot run it (logged with the reason: the micro profile
    then gets nothing, and says so)."""
    try:
        path = make()
    except micro.NotConvertible as exc:
        log.warning("%s not built: %s", micro.MICRO, exc)
        return []
    arena = micro_arena(path)
    if not arena.ok:  # converted, but TFLM cannot run it (an op it lacks...)
        log.warning("%s not built: TFLM cannot run it: %s", micro.MICRO, arena.error)
        path.unlink()
        return []
    return [Built(micro.MICRO, path, shape[0], shape[1], 1, shape[2], arena)]


def build_keras_variants(
    classifier: Classifier, train: Arrays, cfg: OptimizeConfig, out: Path
) -> list[Built]:
    from components.optimization import tflite  # TensorFlow only for a Keras model

    model = classifier.model  # type: ignore[attr-defined]
    params = int(model.count_params())
    out.mkdir(parents=True, exist_ok=True)
    int8 = tflite.convert_int8(
        model,
        out / "int8_static.tflite",
        train.x[: cfg.calibration_samples],
        raw_rows=bool(classifier.spec.encoding),
    )
    return [
        Built("fp32", tflite.convert_fp32(model, out / "fp32.tflite"), params, 0, 4, 0),
        Built("fp16", tflite.convert_fp16(model, out / "fp16.tflite"), params, 0, 2, 0),
        Built("int8_static", int8, params, 0, 1, 0),
        *_micro_variant(lambda: micro.from_tflite(int8, out), (params, 0, 0)),
    ]


def infra_validate(
    path: Path, samples: np.ndarray, expected: np.ndarray, memory_mb: int | None
) -> str | None:
    """Load the file in its runtime in a fresh process under the memory limit and
    answer real queries; None when it answers like the in-process runtime."""
    with tempfile.NamedTemporaryFile(suffix=".npy", delete=False) as handle:
        np.save(handle, samples)
    command = [
        sys.executable,
        "-m",
        "components.optimization.runtime",
        str(path),
        handle.name,
        "--memory-mb",
        str(memory_mb or 0),
    ]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=120, check=False
        )
    finally:
        Path(handle.name).unlink()
    try:
        answer = json.loads(done.stdout)
    except json.JSONDecodeError:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"runtime process failed (exit {done.returncode}): {tail}"
    if not answer["ok"]:
        return f"runtime could not load or answer: {answer['error']}"
    if answer["answers"] != expected.tolist():
        return "runtime process answered differently from the measured runtime"
    return None


def micro_arena(path: Path) -> ArenaReport:
    """The arena TFLM allocates for the file, measured in its own process."""
    report = measure_arena(path)
    if report.ok:
        log.info(
            "%s: TFLM arena %s bytes, ops %s",
            path.name,
            report.arena_bytes,
            ", ".join(sorted(set(report.ops))),
        )
    return report


def micro_infra_validate(path: Path, profile: DeviceProfile) -> str | None:
    """The file in TFLM with exactly the board's arena, in a process of its own."""
    assert profile.max_arena_kb is not None
    report = measure_arena(path, int(profile.max_arena_kb * 1024))
    return None if report.ok else f"TFLM with the board's arena: {report.error}"


def profile_problem(report: VariantReport, profile: DeviceProfile) -> str | None:
    tflm = report.name == micro.MICRO
    if profile.runtime == "micro":
        return (
            micro_problem(report, profile)
            if tflm
            else (
                "runtime micro runs a full-integer TFLM file "
                f"({micro.MICRO}), not {report.file}"
            )
        )
    if tflm:
        return "a TFLM file: for a profile with runtime micro"
    if profile.max_model_kb and report.size_bytes / 1024 > profile.max_model_kb:
        return (
            f"file {report.size_bytes / 1024:.0f} KB > max_model_kb "
            f"{profile.max_model_kb:.0f}"
        )
    if profile.max_ram_kb and report.estimated_ram_kb > profile.max_ram_kb:
        return (
            f"estimated RAM {report.estimated_ram_kb:.0f} KB > max_ram_kb "
            f"{profile.max_ram_kb:.0f}"
        )
    return None


def micro_problem(report: VariantReport, profile: DeviceProfile) -> str | None:
    """A TFLM file against a board: its flash for the file, its RAM for the arena
    TFLM measured plus the profile's margin; each over says by how many bytes."""
    assert profile.max_flash_kb is not None and profile.max_arena_kb is not None
    flash = int(profile.max_flash_kb * 1024)
    if report.size_bytes > flash:
        return (
            f"file {report.size_bytes} bytes > max_flash_kb {profile.max_flash_kb:g} "
            f"({flash} bytes): {report.size_bytes - flash} bytes over"
        )
    if report.arena_bytes is None:
        return f"no arena measured: {report.arena_error or 'TFLM did not say'}"
    arena = int(profile.max_arena_kb * 1024)
    needed = with_margin(report.arena_bytes, profile)
    if needed > arena:
        return (
            f"arena {report.arena_bytes} bytes (+{profile.arena_margin:.0%} margin: "
            f"{needed}) > max_arena_kb {profile.max_arena_kb:g} ({arena} bytes): "
            f"{needed - arena} bytes over"
        )
    return None


def measure(
    built: Built, test: Arrays, reference: np.ndarray, params: Params
) -> VariantReport:
    """`reference`: the framework model's answers on the test rows."""
    cfg = params.optimize
    runtime = load_runtime(built.path)
    answers = predict(runtime, test.x)
    accuracy = float((answers == test.y).mean())
    latency = single_sample_latency(runtime, test.x, runs=cfg.latency_runs)
    paired = PairedDrop.of(reference, answers, test.y)
    drop = paired.drop
    accepted = not paired.refused(cfg.max_accuracy_drop, cfg.drop_test_alpha)
    weights = built.parameters * built.weight_bytes_per_param
    activations = built.peak_activations * max(built.weight_bytes_per_param, 1)
    arena = built.arena
    report = VariantReport(
        name=built.name,
        file=built.path.name,
        size_bytes=built.path.stat().st_size,
        gzip_bytes=len(gzip.compress(built.path.read_bytes(), compresslevel=9)),
        parameters=built.parameters,
        macs=built.macs,
        accuracy=accuracy,
        accuracy_drop=drop,
        latency_median_ms=latency.median_ms,
        latency_p95_ms=latency.p95_ms,
        estimated_ram_kb=(
            (weights + activations) / 1024
            if arena is None
            else (arena.arena_bytes or 0) / 1024
        ),
        accepted=accepted,
        reason=""
        if accepted
        else (
            f"accuracy drop {drop * 100:.2f} points > optimize.max_accuracy_drop "
            f"{cfg.max_accuracy_drop * 100:.2f}, and worse beyond chance: "
            f"{paired.worse} of {paired.worse + paired.better} differing test rows "
            f"against it (exact McNemar p = {paired.p_value:.3g} < "
            f"optimize.drop_test_alpha {cfg.drop_test_alpha})"
        ),
        rows_worse=paired.worse,
        rows_better=paired.better,
        drop_p_value=paired.p_value,
        arena_bytes=arena.arena_bytes if arena else None,
        arena_error=arena.error if arena else "",
        ops=arena.ops if arena else [],
    )
    samples = test.x[: cfg.infra_samples]
    expected = predict(runtime, samples)
    for name, profile in cfg.profiles.items():
        problem = (
            report.reason
            or profile_problem(report, profile)
            or (
                micro_infra_validate(built.path, profile)
                if profile.runtime == "micro"
                else infra_validate(
                    built.path, samples, expected, profile.runtime_memory_mb
                )
            )
        )
        if problem:
            report.not_deployable[name] = problem
        else:
            report.deployable_to.append(name)
            report.latency_ms_by_profile[name] = (
                latency.median_ms
                if profile.threads == 1  # what was measured above
                else single_sample_latency(
                    load_runtime(built.path, profile.threads),
                    test.x,
                    runs=cfg.latency_runs,
                ).median_ms
            )
    return report


def optimize_model(
    params: Params, model_dir: Path, prepared: Path, out: Path
) -> tuple[float, list[VariantReport]]:
    """Build, measure, gate and check every variant; returns the framework model's
    test accuracy (the reference) and the variant reports."""
    label = params.data.label_column
    classifier = load_classifier(model_dir)
    spec = classifier.spec
    train = to_arrays(pd.read_parquet(prepared / "train.parquet"), spec, label)
    test = to_arrays(pd.read_parquet(prepared / "test.parquet"), spec, label)
    answers = classifier.predict_proba(test.x).argmax(1)
    reference = float((answers == test.y).mean())
    out.mkdir(parents=True, exist_ok=True)
    if spec.backend == "keras":
        built = build_keras_variants(classifier, train, params.optimize, out)
    else:
        assert isinstance(classifier, TorchClassifier)
        built = build_torch_variants(
            classifier,
            train,
            params.optimize,
            out,
            lr=params.train.learning_rate,
            seed=params.train.seed,
        )
    for b in built:  # what a device has is the file: it names its classes
        if b.path.suffix == ".onnx":
            stamp_classes(b.path, spec.classes, spec.encoding)
    return reference, [measure(b, test, answers, params) for b in built]


def _body(args: argparse.Namespace, params: Params) -> None:
    reports_dir = (args.reports or params.paths.reports) / "optimize"
    reference, reports = optimize_model(
        params,
        args.model or params.paths.model,
        args.prepared or params.paths.prepared,
        args.out or params.paths.variants,
    )
    spec = load_spec(args.model or params.paths.model)
    per_profile = ship_per_profile(reports, params.optimize)
    write_report(
        reference,
        reports,
        params.optimize.ship_variant,
        reports_dir,
        spec,
        per_profile,
    )
    for profile, choice in per_profile.items():
        log.info("profile %s gets %s: %s", profile, choice["variant"], choice["why"])
    for r in reports:
        log.info(
            "%s: %.1f KB, accuracy %.4f, %.4f ms, %s, deployable to %s",
            r.name,
            r.size_bytes / 1024,
            r.accuracy,
            r.latency_median_ms,
            "pass" if r.accepted else "REJECTED",
            r.deployable_to or "none",
        )


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("optimize", __doc__ or "")
    for name in ("model", "prepared", "out", "reports"):
        parser.add_argument(f"--{name}", type=Path, default=None)
    return run_stage(parser, _body, argv)


if __name__ == "__main__":
    exit_with(main())
