"""Each training mode through `training_pipeline` against a real MLflow server: the
run and the registered version say which mode trained it and what privacy it spent;
a diverging run is recorded as FAILED and not registered."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from components.errors import TrainingError
from tests.conftest import FAST_OPTIMIZE, default_params_dict, make_project

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture
def run_mode(mlflow_uri, prefect_harness, project_root):
    from flows.training import training_pipeline

    def run(name: str, train: dict):
        params = default_params_dict(
            optimize=FAST_OPTIMIZE, train=train, registry={"model_name": name}
        )
        project = make_project(project_root, params)
        result = training_pipeline(project_dir=str(project), tracking_uri=mlflow_uri)
        client = MlflowClient(mlflow_uri)
        version = client.get_model_version(name, result.model.version)
        return result, version, client.get_run(version.run_id), client

    return run


def test_keras_mode(run_mode, mlflow_uri):
    _, version, run, client = run_mode("it-keras", {"backend": "keras", "epochs": 4})
    assert version.tags["edgeloop.backend"] == "keras"
    assert version.tags["edgeloop.training_mode"] == "central"
    assert version.tags["edgeloop.private"] == "false"
    assert len(client.get_metric_history(run.info.run_id, "val_macro_f1")) >= 1
    assert run.data.metrics["test_accuracy"] > 0.85
    mlflow.set_tracking_uri(mlflow_uri)
    model = mlflow.pyfunc.load_model(f"models:/it-keras/{version.version}")
    assert "tensorflow" in model.metadata.flavors
    assert np.asarray(model.predict(np.zeros((2, 64), dtype=np.float32))).shape == (
        2,
        10,
    )


def test_private_mode(run_mode):
    _, version, run, _ = run_mode(
        "it-private", {"epochs": 3, "privacy": {"enabled": True, "target_epsilon": 4.0}}
    )
    assert version.tags["edgeloop.training_mode"] == "private"
    assert version.tags["edgeloop.private"] == "true"
    assert version.tags["edgeloop.privacy_mechanism"] == "opacus_dp_sgd"
    epsilon = float(version.tags["edgeloop.privacy_epsilon"])
    assert 0 < epsilon <= 4.05
    assert run.data.metrics["privacy_epsilon"] == pytest.approx(epsilon, abs=1e-3)
    assert run.data.metrics["privacy_total_epsilon"] == pytest.approx(epsilon, abs=1e-3)


def test_federated_private_mode(run_mode):
    _, version, run, client = run_mode(
        "it-federated",
        {
            "federated": {
                "enabled": True,
                "num_clients": 3,
                "rounds": 2,
                "dp": "client_opacus",
                "partition": {"kind": "dirichlet", "alpha": 0.5},
            }
        },
    )
    assert version.tags["edgeloop.training_mode"] == "federated_private"
    assert version.tags["edgeloop.privacy_mechanism"] == "flower_client_opacus"
    rounds = client.get_metric_history(run.info.run_id, "round_test_accuracy")
    assert sorted(m.step for m in rounds) == [0, 1, 2]
    assert run.data.params["train.federated.partition.kind"] == "dirichlet"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "federated")}
    assert artifacts == {"federated/partitions.json"}


def test_a_diverging_run_is_failed_not_registered(
    mlflow_uri, prefect_harness, project_root
):
    from flows.training import training_pipeline

    params = default_params_dict(
        optimize=FAST_OPTIMIZE,
        train={"optimizer": "sgd", "learning_rate": 10.0, "weight_decay": 0.0},
        registry={"model_name": "it-diverged"},
    )
    project = make_project(project_root, params)
    with pytest.raises(TrainingError, match="diverged"):
        training_pipeline(project_dir=str(project), tracking_uri=mlflow_uri)
    client = MlflowClient(mlflow_uri)
    assert client.search_registered_models("name = 'it-diverged'") == []
    [failed] = client.search_runs(
        [client.get_experiment_by_name("edgeloop-training").experiment_id],
        "tags.`edgeloop.failed_stage` = 'train'",
    )
    assert failed.info.status == "FAILED"
    assert "diverged" in failed.data.tags["edgeloop.error"]
