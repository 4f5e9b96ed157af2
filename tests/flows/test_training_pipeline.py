"""training_pipeline end to end against a real MLflow server and a Prefect server:
DVC-versioned data, lineage in MLflow, a registered version, cache-skipping reruns,
dvc push/pull, and a bad batch that stops the run before training."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml
from mlflow import MlflowClient

from components.errors import ConfigError, DataContractError, StageError
from tests.conftest import (
    BIN,
    FAST_OPTIMIZE,
    default_params_dict,
    make_project,
    project_of,
)

if TYPE_CHECKING:
    from flows.training import PipelineResult

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _dvc_lock_hash(project: Path, stage: str, path: str) -> str:
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    [out] = [o for o in lock["stages"][stage]["outs"] if o["path"] == path]
    return out["md5"]


@pytest.fixture
def pipeline(mlflow_uri, prefect_harness):
    from flows.training import training_pipeline

    return lambda project: training_pipeline(
        project_dir=str(project), tracking_uri=mlflow_uri
    )


def test_pipeline_logs_lineage_and_registers_a_version(
    champion, mlflow_uri, prefect_harness, tmp_path
):
    """On SQLite: the session's champion is this pipeline run (trained once for every
    test that needs one); the re-run and the pull work on a copy of its project."""
    check_lineage(
        mlflow_uri, champion.name, champion.result, project_of(champion, tmp_path)
    )


def test_pipeline_on_postgresql_logs_lineage_and_registers_a_version(
    champion, mlflow_postgres, prefect_harness, tmp_path
):
    """The same pipeline with MLflow's backend store on PostgreSQL, on a copy of the
    champion's project: DVC has every stage's output (what DVC does does not depend
    on MLflow's database, and the SQLite test checks that the stages ran), so the
    run, its lineage, the registration, the gates and the aliases go to PostgreSQL."""
    from flows.training import training_pipeline

    project = project_of(champion, tmp_path)
    mlflow_uri = mlflow_postgres.tracking_uri
    result = training_pipeline(project_dir=str(project), tracking_uri=mlflow_uri)
    assert result.skipped == ["prepare", "validate", "train", "evaluate", "optimize"]
    assert result.model.newly_registered and result.model.version == "1"
    check_lineage(mlflow_uri, champion.name, result, project, stages_ran=False)


def check_lineage(
    mlflow_uri: str,
    name: str,
    result: PipelineResult,
    project: Path,
    *,
    stages_ran: bool = True,
) -> None:
    """What a pipeline run left in MLflow and DVC; then a cached re-run of `project`
    and a pull of its data version from the DVC remote."""
    from flows.training import training_pipeline

    def pipeline(project: Path):
        return training_pipeline(project_dir=str(project), tracking_uri=mlflow_uri)

    epochs = yaml.safe_load((project / "params.yaml").read_text())["train"]["epochs"]
    assert [s.ran for s in result.stages] == [stages_ran] * 5
    client = MlflowClient(mlflow_uri)
    version = client.get_model_version(name, result.model.version)
    run = client.get_run(version.run_id)
    assert run.data.params["train.epochs"] == str(epochs)
    assert run.data.params["data.source"] == "sklearn:digits"
    assert run.data.metrics["test_accuracy"] > 0.85
    assert len(client.get_metric_history(run.info.run_id, "val_loss")) >= 1
    prepared = _dvc_lock_hash(project, "validate", "data/prepared")
    assert run.data.tags["edgeloop.prepared_data_md5"] == prepared
    assert version.tags["edgeloop.prepared_data_md5"] == prepared
    assert version.tags["edgeloop.raw_data_md5"] == _dvc_lock_hash(
        project, "prepare", "data/raw"
    )
    assert len(version.tags["edgeloop.git_commit"]) >= 40
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "data_card")}
    assert artifacts == {"data_card/data_card.md", "data_card/data_card.json"}
    variants = {a.path for a in client.list_artifacts(run.info.run_id, "variants")}
    assert "variants/int8_static.onnx" in variants and "variants/fp32.onnx" in variants
    assert version.tags["edgeloop.ship_variant"] == "int8_static"
    expected_gate = "passed" if result.gate.passed else "failed"
    assert version.tags["edgeloop.gate"] == expected_gate
    if result.gate.passed:  # auto promotion: the first passing version is champion
        assert result.champion == result.model.version
    assert version.tags["edgeloop.deployable_profiles"] == "gateway"
    # Each profile's measured best, visible in the MLflow UI: a variant that fits.
    per_profile = dict(
        p.split("=") for p in version.tags["edgeloop.ship_per_profile"].split(",")
    )
    assert set(per_profile) == {"gateway"}
    assert per_profile["gateway"] in version.tags["edgeloop.accepted_variants"]
    # The timings that chose it, as the run's metrics.
    timed = {
        k.split(".")[2]
        for k in run.data.metrics
        if k.startswith("profile.gateway.") and k.endswith(".latency_median_ms")
    }
    assert per_profile["gateway"] in timed and "fp32" in timed
    # Its file in the run, sealed by the gates where it is not the shipped one.
    own_file = f"gateway=variants/{per_profile['gateway']}.onnx"
    assert version.tags["edgeloop.ship_files_per_profile"] == own_file
    assert f"variants/{per_profile['gateway']}.onnx" in variants
    seal = json.loads(version.tags["edgeloop.gate_seal"])
    assert set(seal.get("per_profile", {})) == (
        set() if per_profile["gateway"] == "int8_static" else {"gateway"}
    )
    assert run.data.metrics["variant.int8_static.size_bytes"] < (
        run.data.metrics["variant.fp32.size_bytes"] / 2
    )
    card = client.download_artifacts(run.info.run_id, "data_card/data_card.json")
    assert '"rows": 1797' in Path(card).read_text()

    again = pipeline(project)
    assert again.skipped == ["prepare", "validate", "train", "evaluate", "optimize"]
    assert again.model.version == result.model.version
    assert not again.model.newly_registered

    # The data version is in the DVC remote: a fresh cache and workspace pull it back.
    shutil.rmtree(project / ".dvc" / "cache")
    shutil.rmtree(project / "data" / "prepared")
    subprocess.run([str(BIN / "dvc"), "pull", "-q"], cwd=project, check=True)
    assert (project / "data" / "prepared" / "train.parquet").exists()
    status = subprocess.run(
        [str(BIN / "dvc"), "status"],
        cwd=project,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "up to date" in status


def test_a_bad_batch_stops_before_training(pipeline, mlflow_uri, project_root):
    params = default_params_dict(
        optimize=FAST_OPTIMIZE,
        train={"epochs": 2},
        validation={"feature_range": [0, 15]},  # digits go up to 16: a broken batch
        registry={"model_name": "edgeloop-it-rejected"},
    )
    project = make_project(project_root, params)
    with pytest.raises(DataContractError, match="expect_column_values_to_be_between"):
        pipeline(project)
    assert not (project / "models").exists()
    [kept] = list((project / "data" / "quarantine").iterdir())
    assert (kept / "batch.parquet").exists() and (kept / "reason.json").exists()
    assert (
        MlflowClient(mlflow_uri).search_registered_models(
            "name = 'edgeloop-it-rejected'"
        )
        == []
    )


def test_a_second_failure_shows_its_own_reason_not_the_first(pipeline, project_root):
    params = default_params_dict(
        registry={"model_name": "edgeloop-it-refailed"},
        data={"name": "table", "source": "data/sources/table.csv"},
    )
    project = make_project(project_root, params)
    # No incoming or sources folder at all (a project from before paths.sources):
    # made by the flow (DVC dependencies), not a DVC failure; the stage runs and
    # stops on its own reason, the missing source.
    shutil.rmtree(project / "data" / "incoming")
    shutil.rmtree(project / "data" / "sources")
    with pytest.raises(ConfigError, match="data.source: file 'data/sources/table.csv'"):
        pipeline(project)
    assert (project / "data" / "incoming" / "table").is_dir()
    assert (project / "data" / "sources").is_dir()
    assert (project / "reports" / "failed" / "prepare.json").exists()
    # Then, for another reason: a dependency of the stage is gone. What is shown is
    # DVC's own message about it, in one line, not the first failure's report.
    (project / "components" / "data" / "sources.py").unlink()
    with pytest.raises(StageError) as second:
        pipeline(project)
    message = str(second.value)
    assert "failed to reproduce 'prepare'" in message, message
    assert "No such file or directory" in message and "sources.py" in message
    assert "table.csv" not in message and "\n" not in message
    assert not (project / "reports" / "failed" / "prepare.json").exists()
