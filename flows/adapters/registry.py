"""The MLflow registry side of promotion: gates decide `challenger`, policy or a
person sets `champion`, and every alias change is recorded (who, when, from which
version to which, why) as a tag on the registered model, since the registry keeps
no alias history of its own."""

from __future__ import annotations

import functools
import getpass
import hashlib
import json
import tempfile
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from components.config import RegistryConfig, ServingConfig
from components.errors import EdgeloopError
from components.evaluation.gates import Candidate, GateDecision, decide
from components.evaluation.paired import PairedDrop
from stack.contracts import ALIAS_HISTORY_PREFIX, TAG_PREFIX, Alias, Tag
from stack.gate_seal import GateSeal, file_sha256
from stack.rollback_order import RollbackOrder, is_older

CHAMPION, CHALLENGER = Alias.CHAMPION, Alias.CHALLENGER


class PromotionError(EdgeloopError):
    """A promotion or rollback the registry's state does not allow."""


@dataclass(frozen=True)
class AliasChange:
    alias: str
    from_version: str | None
    to_version: str
    who: str
    when: str
    why: str


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def history(client: MlflowClient, name: str) -> list[AliasChange]:
    tags = client.get_registered_model(name).tags
    return [
        AliasChange(**json.loads(tags[k]))
        for k in sorted(k for k in tags if k.startswith(ALIAS_HISTORY_PREFIX))
    ]


def set_alias(
    client: MlflowClient, name: str, alias: str, version: str, *, who: str, why: str
) -> AliasChange:
    previous = alias_version(client, name, alias)
    client.set_registered_model_alias(name, alias, str(version))
    return record_change(client, name, alias, previous, str(version), who=who, why=why)


def record_change(
    client: MlflowClient,
    name: str,
    alias: str,
    previous: str | None,
    version: str,
    *,
    who: str,
    why: str,
) -> AliasChange:
    """Append one alias change to the registered model's history tags."""
    change = AliasChange(
        alias,
        previous,
        str(version),
        who,
        datetime.now(UTC).isoformat(timespec="microseconds"),
        why,
    )
    client.set_registered_model_tag(
        name,
        f"{ALIAS_HISTORY_PREFIX}{len(history(client, name)):06d}",
        json.dumps(asdict(change)),
    )
    return change


def record_external_change(
    client: MlflowClient, name: str, alias: str, version: str, who: str
) -> AliasChange | None:
    """An alias set outside the stack (the MLflow UI or REST API), as a webhook
    reports it; None when the stack already recorded that very change."""
    changes = [c for c in history(client, name) if c.alias == alias]
    if changes and changes[-1].to_version == str(version):
        return None
    previous = changes[-1].to_version if changes else None
    return record_change(
        client, name, alias, previous, version, who=who, why="alias set in the registry"
    )


def alias_at(changes: list[AliasChange], alias: str, when: datetime) -> str | None:
    """Which version held `alias` at time `when` (None before the first change)."""
    holder = None
    for change in changes:
        if change.alias == alias and datetime.fromisoformat(change.when) <= when:
            holder = change.to_version
    return holder


def candidate(client: MlflowClient, name: str, version: str) -> Candidate:
    model_version = client.get_model_version(name, version)
    metrics = client.get_run(model_version.run_id).data.metrics
    tags = model_version.tags
    ship = tags.get(Tag.SHIP_VARIANT, "")
    return Candidate(
        version=str(version),
        test_accuracy=metrics["test_accuracy"],
        ship_bytes=metrics.get(f"variant.{ship}.size_bytes", float("inf")),
        ship_latency_ms=metrics.get(f"variant.{ship}.latency_median_ms", float("inf")),
        ship_accepted=tags.get(Tag.SHIP_ACCEPTED) == "true",
    )


@dataclass(frozen=True)
class TestSplit:
    """A candidate's test split: its file and its label column."""

    path: Path
    label_column: str


def champion_on(
    client: MlflowClient,
    name: str,
    champion: Candidate,
    candidate_version: str,
    test_split: TestSplit,
) -> tuple[Candidate, PairedDrop]:
    """The champion and the candidate answering the candidate's test split, each
    its fp32 device file in its runtime through its own encoding: the paired
    comparison the drop gate judges. When the two were tested on different data
    versions (new data arrived), the champion's accuracy is the one measured here:
    accuracy on one test set against accuracy on another is no comparison."""
    import pandas as pd

    # The device runtimes (ONNX Runtime, LiteRT): only when there is a champion.
    from components.optimization.runtime import predicted_labels
    from serving.model_source import AliasSource

    frame = pd.read_parquet(test_split.path)
    truth = frame[test_split.label_column].to_numpy(dtype=object)
    source = AliasSource(client.tracking_uri, name, ServingConfig(variant="fp32"))

    def answers(version: str) -> np.ndarray:
        loaded = source.load(version)
        return predicted_labels(
            loaded.runtime,
            frame,
            loaded.classes,
            label_column=test_split.label_column,
            encoding=loaded.encoding,
            features=loaded.feature_columns,
        )

    theirs = answers(champion.version)
    paired = PairedDrop.of(theirs, answers(candidate_version), truth)
    client.set_model_version_tag(
        name,
        candidate_version,
        Tag.VS_CHAMPION,
        f"v{champion.version}: {paired.worse} test rows it gets right and this "
        f"version wrong, {paired.better} the other way, of {len(truth)} (exact "
        f"McNemar p = {paired.p_value:.3g})",
    )
    tags = client.get_model_version(name, candidate_version).tags
    before = client.get_model_version(name, champion.version).tags
    key = Tag.PREPARED_DATA_MD5
    if tags.get(key) is None or tags.get(key) == before.get(key):
        return champion, paired
    accuracy = float((theirs == truth).mean())
    client.set_model_version_tag(
        name,
        candidate_version,
        f"{TAG_PREFIX}champion_accuracy_same_data",
        f"v{champion.version}: {accuracy:.4f}",
    )
    return replace(champion, test_accuracy=accuracy), paired


def seal_decision(
    client: MlflowClient, name: str, version: str, passed: bool, key: bytes
) -> GateSeal | None:
    """Sign the gates' decision with the stack's key, over the file a device would
    get (downloaded and hashed here), each profile's own file where its measured
    best is another variant, and what the version's tags say of them; None for a
    version with nothing to ship (not optimized by the pipeline)."""
    model_version = client.get_model_version(name, version)
    tags = model_version.tags
    if Tag.SHIP_FILE not in tags:
        return None
    variant = tags.get(Tag.SHIP_VARIANT, "unknown")
    per_profile = {}
    with tempfile.TemporaryDirectory() as tmp:

        @functools.cache  # profiles whose best is the same variant: one download
        def sha256_of(artifact: str) -> str:
            where = Path(tempfile.mkdtemp(dir=tmp))
            local = client.download_artifacts(model_version.run_id, artifact, where)
            return file_sha256(Path(local))

        digest = sha256_of(tags[Tag.SHIP_FILE])
        for profile, (own, file) in profile_files(tags).items():
            if own != variant:
                per_profile[profile] = {
                    "file": file,
                    "sha256": sha256_of(file),
                    "variant": own,
                }
    seal = GateSeal(
        model=name,
        version=str(version),
        ship_file=tags[Tag.SHIP_FILE],
        sha256=digest,
        variant=variant,
        profiles=tags.get(Tag.DEPLOYABLE_PROFILES, "none"),
        gate="passed" if passed else "failed",
        per_profile=per_profile,
    )
    client.set_model_version_tag(name, version, Tag.GATE_SEAL, seal.tag_value(key))
    return seal


def profile_files(tags: dict[str, str]) -> dict[str, tuple[str, str]]:
    """{profile: (variant, run artifact)} of each profile's measured best, from the
    version's `ship_per_profile` and `ship_files_per_profile` tags (none on a
    version optimized before they existed)."""

    def pairs(tag: str) -> dict[str, str]:
        value = tags.get(tag, "none")
        if value == "none":
            return {}
        return dict(item.split("=", 1) for item in value.split(",") if "=" in item)

    variants, files = pairs(Tag.SHIP_PER_PROFILE), pairs(Tag.SHIP_FILES_PER_PROFILE)
    return {
        profile: (variants[profile], file)
        for profile, file in files.items()
        if variants.get(profile, "-") != "-"
    }


def gate_inputs(cfg: RegistryConfig, measured: Candidate) -> str:
    """A digest of what a gate decision is made on: the gate settings and the
    candidate's measurements."""
    body = json.dumps(
        {"gates": cfg.gates.model_dump(mode="json"), "candidate": asdict(measured)},
        sort_keys=True,
    )
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def apply_gates(
    client: MlflowClient,
    name: str,
    version: str,
    cfg: RegistryConfig,
    test_split: TestSplit | None = None,
    *,
    key: bytes,
) -> GateDecision:
    """Gate a new version: tag it with the result, sealed with the stack's gate
    `key`, make it `challenger` if it passes, and `champion` too when promotion is
    auto and it beats the champion. With `test_split`, a champion tested on
    another data version is measured again on this one before the two are
    compared."""
    tags = client.get_model_version(name, version).tags
    measured = candidate(client, name, version)
    inputs = gate_inputs(cfg, measured)
    if Tag.GATE in tags and tags.get(Tag.GATE_INPUTS) == inputs:
        # Already decided on these settings and measurements (a cached rerun).
        failures = tags.get(Tag.GATE_FAILURES, "")
        return GateDecision(str(version), [f for f in failures.split("; ") if f])
    champion_version = alias_version(client, name, CHAMPION)
    champion = (
        candidate(client, name, champion_version)
        if champion_version and champion_version != str(version)
        else None
    )
    paired = None
    if champion is not None and test_split is not None:
        champion, paired = champion_on(client, name, champion, version, test_split)
    decision = decide(measured, champion, cfg.gates, paired)
    client.set_model_version_tag(
        name, version, Tag.GATE, "passed" if decision.passed else "failed"
    )
    client.set_model_version_tag(name, version, Tag.GATE_INPUTS, inputs)
    client.set_model_version_tag(
        name, version, Tag.GATE_FAILURES, "; ".join(decision.failures)
    )
    seal_decision(client, name, version, decision.passed, key)
    if decision.passed:
        set_alias(
            client, name, CHALLENGER, version, who="edgeloop gates", why="passed gates"
        )
        promoted = cfg.promotion == "auto" and decision.beats_champion
        client.set_model_version_tag(
            name, version, Tag.PROMOTION, promotion(cfg, measured, champion, promoted)
        )
        if promoted:
            why = (
                "first version to pass the gates"
                if champion is None
                else f"auto: {decision.version} is at least as accurate as "
                f"v{champion.version}"
            )
            set_alias(
                client, name, CHAMPION, version, who="edgeloop auto-promotion", why=why
            )
    return decision


def promotion(
    cfg: RegistryConfig, measured: Candidate, champion: Candidate | None, done: bool
) -> str:
    """Why a version that passed the gates became champion, or did not, in words
    (the `edgeloop.promotion` tag; the loop's report reads it)."""
    if champion is None:
        return (
            "auto: champion, the first version to pass the gates"
            if done
            else "waits for a person (registry.promotion: manual): "
            f"`edgeloop promote {measured.version}` or the MLflow UI"
        )
    versus = (
        f"test accuracy {measured.test_accuracy:.4f} against champion "
        f"v{champion.version}'s {champion.test_accuracy:.4f} on the same test rows"
    )
    if done:
        return f"auto: champion, {versus}"
    if cfg.promotion == "manual":
        return (
            f"waits for a person (registry.promotion: manual), {versus}: "
            f"`edgeloop promote {measured.version}` or the MLflow UI"
        )
    return (
        f"not promoted: {versus}, below it (auto promotes a version at least as "
        f"accurate); a person may: `edgeloop promote {measured.version}`"
    )


def promote(
    client: MlflowClient, name: str, version: str, why: str, who: str | None = None
) -> AliasChange:
    """A person makes `version` the champion; a version that failed a gate cannot."""
    try:
        tags = client.get_model_version(name, version).tags
    except MlflowException:
        raise PromotionError(f"model {name!r} has no version {version!r}") from None
    if tags.get(Tag.GATE) != "passed":
        raise PromotionError(
            f"version {version} of {name!r} did not pass the gates: "
            f"{tags.get(Tag.GATE_FAILURES) or 'not gated'}",
            hint="only a version that passed the gates can become champion; after "
            "changing a registry.gates key, `edgeloop run` judges it again",
        )
    current = alias_version(client, name, CHAMPION)
    if current is not None and is_older(str(version), current):
        raise PromotionError(
            f"version {version} of {name!r} is older than champion v{current}: a "
            "downgrade is a rollback",
            hint=f"edgeloop rollback --to {version} --reason WHY",
        )
    return set_alias(
        client, name, CHAMPION, version, who=who or getpass.getuser(), why=why
    )


def rollback(
    client: MlflowClient,
    name: str,
    why: str,
    *,
    key: bytes,
    to: str | None = None,
    who: str | None = None,
) -> AliasChange:
    """Move `champion` back to `to` (default: the version that held it before the
    current one), a version that passed the gates, with a rollback order signed
    with the gate `key` on it first (stack/rollback_order.py: serving and the fleet
    ship an older version only with one)."""
    current = alias_version(client, name, CHAMPION)
    target = to if to is not None else previous_champion(client, name, current)
    if current is None or target is None:
        raise PromotionError(
            f"{name!r}: no earlier champion to roll back to "
            f"(current: {current or 'none'})"
        )
    if not is_older(str(target), current):
        raise PromotionError(
            f"version {target} of {name!r} is not older than champion v{current}: "
            "nothing to roll back",
            hint=f"edgeloop promote {target}",
        )
    try:
        tags = client.get_model_version(name, str(target)).tags
    except MlflowException:
        raise PromotionError(f"model {name!r} has no version {target!r}") from None
    if tags.get(Tag.GATE) != "passed":
        raise PromotionError(
            f"version {target} of {name!r} did not pass the gates: "
            f"{tags.get(Tag.GATE_FAILURES) or 'not gated'}"
        )
    who = who or getpass.getuser()
    order = RollbackOrder(
        model=name,
        version=str(target),
        replaces=current,
        who=who,
        why=why,
        at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    client.set_model_version_tag(
        name, str(target), Tag.ROLLBACK_ORDER, order.tag_value(key)
    )
    return set_alias(
        client, name, CHAMPION, str(target), who=who, why=f"rollback: {why}"
    )


def previous_champion(
    client: MlflowClient, name: str, current: str | None
) -> str | None:
    """The version that held `champion` before `current` did."""
    changes = [c for c in history(client, name) if c.alias == CHAMPION]
    return next(
        (
            c.from_version
            for c in reversed(changes)
            if c.to_version == current and c.from_version and c.from_version != current
        ),
        None,
    )


def data_card(tracking_uri: str, run_id: str) -> dict[str, Any] | None:
    """The data card logged with a training run (None for a run without one)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = MlflowClient(tracking_uri).download_artifacts(
                run_id, "data_card/data_card.json", tmp
            )
        except (MlflowException, OSError):
            return None
        return json.loads(Path(path).read_text())
