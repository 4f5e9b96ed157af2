"""BentoML serving of the registry's model behind an alias (`champion` by default).

`Classifier` runs the model with adaptive batching; `Predictor` is the front door: it
checks each request on its own (so a bad one never fails a batch of good ones),
answers 4xx with what was expected, and logs a sample for monitoring. The alias is
polled; a new version is loaded beside the old one and swapped in whole, so no
request fails during a switch. The release flow calls `/refresh` after an alias
change, so a promotion does not wait for the next poll.

    bentoml serve serving.service:Predictor --host 127.0.0.1 --port 3000
(params.yaml from the working folder or EDGELOOP_PARAMS; MLflow from the settings)"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import bentoml
import numpy as np
from bentoml.exceptions import InvalidArgument
from pydantic import BaseModel

from components.config import load_params
from serving.model_source import AliasSource, FeatureRanges, LoadedModel
from serving.prediction_log import PredictionLog
from stack.body_limit import ASGIApp, BodyLimit
from stack.settings import get_settings

log = logging.getLogger("edgeloop.serving")


@dataclass(frozen=True)
class RowContract:
    """What a request's rows must be for one model version: its feature count, and
    each value finite in float32 (the dtype the model runs in) and within the data
    contract's range for its column."""

    version: str
    n_features: int
    ranges: FeatureRanges

    @cached_property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The ranges as float32 arrays, made once per contract (not per request)."""
        return (
            np.asarray(self.ranges.low, dtype=np.float32),
            np.asarray(self.ranges.high, dtype=np.float32),
        )

    def check(self, instances: list[list[float]]) -> np.ndarray:
        """The rows as the model's float32 input; InvalidArgument (400) naming the
        first row and column that break the contract."""
        for i, row in enumerate(instances):
            if len(row) != self.n_features:
                raise InvalidArgument(
                    f"instances[{i}]: expected {self.n_features} features, "
                    f"got {len(row)}"
                )
        with np.errstate(over="ignore"):  # past float32's range: inf, refused below
            rows = np.asarray(instances, dtype=np.float64).astype(np.float32)
        low, high = self.bounds
        bad = ~np.isfinite(rows) | (rows < low) | (rows > high)
        if bad.any():
            i, j = (int(k) for k in np.argwhere(bad)[0])
            raise InvalidArgument(self.why(i, j, instances[i][j]))
        return rows

    def why(self, i: int, j: int, value: float) -> str:
        column = f" ({self.ranges.names[j]})" if self.ranges.names else ""
        where = f"instances[{i}][{j}]{column}"
        if not math.isfinite(value) or abs(value) > np.finfo(np.float32).max:
            return f"{where}: {value!r} is not a finite float32"
        return (
            f"{where}: {value!r} is outside [{self.ranges.low[j]:g}, "
            f"{self.ranges.high[j]:g}] ({self.ranges.setting[j]})"
        )


class ServingBodyLimit(BodyLimit):
    """Request bodies over serving.max_request_bytes are refused (413) unread."""

    def __init__(self, app: ASGIApp) -> None:
        limit = load_params(_params_path()).serving.max_request_bytes
        super().__init__(app, limit, what="serving.max_request_bytes")


class Prediction(BaseModel):
    label: int | str
    probabilities: list[float]
    model_version: str


def _params_path() -> Path:
    return get_settings().params


# BentoML 1.4.40 closes the front service's session to this one every 100 calls or
# 300 s while other calls are still in flight on it ("Connector is closed", a 500
# under concurrency: bentoml/BentoML#5544); keep one session for the process.
@bentoml.service(
    name="edgeloop-classifier",
    traffic={"timeout": 30},
    runner_connection={"max_requests": 2**62, "max_age": 10.0**12},
)
class Classifier:
    def __init__(self) -> None:
        params = load_params(_params_path())
        self.cfg = params.serving
        self.source = AliasSource(
            get_settings().tracking_uri, params.registry.model_name, self.cfg
        )
        self.model: LoadedModel = self.source.load(self.source.current_version())
        self.switching = threading.Lock()
        self.stop = threading.Event()
        threading.Thread(target=self._follow_alias, daemon=True).start()

    def _switch(self) -> tuple[str, str]:
        """Load the version the alias names now, if it is another one; the old model
        answers until the new one is loaded. Returns (before, after)."""
        with self.switching:
            before = self.model.version
            version = self.source.current_version()
            if version != before:
                self.model = self.source.load(version)  # one reference swap
                log.info("now serving version %s (was %s)", version, before)
            return before, self.model.version

    def _follow_alias(self) -> None:
        while not self.stop.wait(self.cfg.poll_s):
            try:
                self._switch()
            except Exception:
                log.exception(
                    "could not follow the alias; still serving v%s", self.model.version
                )

    @bentoml.api
    def refresh(self) -> dict:
        """Re-read the alias now (the release flow calls this after a change)."""
        before, after = self._switch()
        return {"previous_version": before, "model_version": after}

    @bentoml.api
    def describe(self) -> dict:
        model = self.model
        return {
            "model_version": model.version,
            "variant": model.variant,
            "n_features": model.n_features,
            "classes": model.classes,
            "ranges": asdict(model.ranges),
        }

    # Adaptive batching. BentoML answers 503 to a request it predicts cannot be
    # served within max_latency_ms, so this is a ceiling, not a target (20 ms made
    # requests fail under load on this 2-core machine).
    @bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=1000)
    def classify(self, features: np.ndarray) -> list[dict]:
        model = self.model  # the same model for the whole batch
        probabilities = model.probabilities(features.astype(np.float32))
        return [
            {
                "label": model.classes[int(p.argmax())],
                "probabilities": [float(v) for v in p],
                "model_version": model.version,
            }
            for p in probabilities
        ]


@bentoml.service(name="edgeloop", traffic={"timeout": 30, "max_concurrency": 512})
class Predictor:
    classifier = bentoml.depends(Classifier)

    def __init__(self) -> None:
        params = load_params(_params_path())
        self.cfg = params.serving
        self.log = PredictionLog(
            params.paths.prediction_log,
            self.cfg.log_sample_rate,
            self.cfg.log_rows_per_file,
        )
        # The contract of the model last seen (its version, feature count and
        # ranges); refreshed when an answer comes from another version, so a switch
        # cannot leave a stale check.
        self.contract: RowContract | None = None

    async def _contract(self) -> RowContract:
        if self.contract is None:
            described = await self.classifier.to_async.describe()
            self.contract = RowContract(
                str(described["model_version"]),
                int(described["n_features"]),
                FeatureRanges(**described["ranges"]),
            )
        return self.contract

    @bentoml.api
    async def refresh(self) -> dict:
        """Switch to the version the alias names now, without waiting for the next
        poll. Safe to call by anyone on loopback: it only re-reads the registry."""
        answer = await self.classifier.to_async.refresh()
        self.contract = None
        return answer

    @bentoml.api
    async def predict(self, instances: list[list[float]]) -> list[Prediction]:
        """Classify rows of raw features; answers one Prediction per row."""
        contract = await self._contract()
        if not instances or len(instances) > self.cfg.max_request_rows:
            raise InvalidArgument(
                f"instances: expected 1 to {self.cfg.max_request_rows} "
                f"rows, got {len(instances)}"
            )
        answers = await self.classifier.to_async.classify(contract.check(instances))
        if answers[0]["model_version"] != contract.version:
            self.contract = None  # a new version answered: re-read its contract
        for row, answer in zip(instances, answers, strict=True):
            self.log.offer(
                row,
                answer["label"],
                max(answer["probabilities"]),
                answer["model_version"],
            )
        return [Prediction(**a) for a in answers]


Predictor.add_asgi_middleware(ServingBodyLimit)
