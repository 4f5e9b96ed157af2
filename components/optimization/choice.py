"""Which file each device profile gets: measured, not assumed (int8 is not faster
on every CPU: ONNX Runtime's int8 kernels pay where the CPU has the instructions and
the model is compute-bound; bench/compute_bound.py)."""

from __future__ import annotations

import math

from components.config import DeviceProfile, OptimizeConfig
from components.optimization.report import VariantReport

FP32 = "fp32"  # the model as trained, exported: what every variant is measured against


def ship_per_profile(
    reports: list[VariantReport], cfg: OptimizeConfig
) -> dict[str, dict]:
    """What each device profile should get, and the measurements that chose it:
    of the variants that passed the accuracy gate and fit the profile (budgets,
    infra-validation), the fastest in the profile's runtime with its threads; a
    variant within `latency_tie` of the fastest and smaller wins (the file must
    still reach the device), unless it is slower than fp32 there. With
    `ship_choice: fixed`, `ship_variant` where it fits. `variant` is None where
    nothing fits."""
    chosen = {}
    for name, profile in cfg.profiles.items():
        timed = {
            r.name: r.latency_ms_by_profile[name]
            for r in reports
            if name in r.latency_ms_by_profile
        }
        pick, why = _pick([r for r in reports if r.name in timed], timed, cfg)
        if pick is not None and profile.runtime == "micro":
            why += f"; {board_use(pick, profile)}"
        chosen[name] = {
            "variant": pick.name if pick else None,
            "file": pick.file if pick else None,
            "size_bytes": pick.size_bytes if pick else None,
            "latency_median_ms": timed[pick.name] if pick else None,
            "threads": profile.threads,
            "measured_ms": timed,
            "why": why,
        }
    return chosen


def _pick(
    fitting: list[VariantReport], timed: dict[str, float], cfg: OptimizeConfig
) -> tuple[VariantReport | None, str]:
    if not fitting:
        return None, "no accepted variant fits this profile"
    if cfg.ship_choice == "fixed":
        pick = next((r for r in fitting if r.name == cfg.ship_variant), None)
        if pick is None:
            return None, f"optimize.ship_variant {cfg.ship_variant} does not fit"
        return pick, "optimize.ship_choice: fixed (ship_variant)"
    fastest = min(timed.values())
    # Within the tie, but never slower than fp32 where fp32 fits: a smaller file
    # is not worth a slower one than the model as trained.
    ceiling = min(fastest * (1 + cfg.latency_tie), timed.get(FP32, float("inf")))
    tied = [r for r in fitting if timed[r.name] <= ceiling]
    pick = min(tied, key=lambda r: (r.size_bytes, timed[r.name]))
    why = f"fastest of {len(fitting)} fitting variants"
    if len(tied) > 1:
        why += (
            f"; the smallest of {len(tied)} within latency_tie {cfg.latency_tie:g}"
            + (" and not slower than fp32" if FP32 in timed else "")
        )
    return pick, why


def board_use(report: VariantReport, profile: DeviceProfile) -> str:
    """A TFLM file's flash and arena against the board's budgets, in bytes."""
    assert profile.max_flash_kb is not None and profile.max_arena_kb is not None
    arena = report.arena_bytes or 0
    return (
        f"flash {report.size_bytes} of {int(profile.max_flash_kb * 1024)} bytes, "
        f"arena {arena} (+{profile.arena_margin:.0%}: "
        f"{with_margin(arena, profile)}) of "
        f"{int(profile.max_arena_kb * 1024)} bytes"
    )


def with_margin(arena_bytes: int, profile: DeviceProfile) -> int:
    """The arena TFLM measured plus the profile's `arena_margin`, in whole bytes."""
    return math.ceil(round(arena_bytes * (1 + profile.arena_margin), 6))
