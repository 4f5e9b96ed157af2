"""BentoML serving of the registry's model behind an alias (`champion` by default).

One service: the model lives in the process that answers HTTP (no second BentoML
service behind a socket, bentoml/BentoML#2923). Each request is checked on its own,
vectorised, against its version's contract (so a bad one never fails good ones),
then joins an in-process micro-batcher (serving/batcher.py says why not BentoML's
`batchable` API). `serving.workers` processes (default: one per core) each load the
model once, with ONNX Runtime's threads split between them; an alias change is
switched for all workers at one moment (serving/switch.py), so no request fails and
none is answered by the old version after the new one. The release flow calls
`/refresh` after an alias change, so a promotion does not wait for the next poll.

    bentoml serve serving.service:Predictor --host 127.0.0.1 --port 3000
(params.yaml from the working folder or EDGELOOP_PARAMS; MLflow from the settings)"""

from __future__ import annotations

import gc
import logging
import os
from dataclasses import asdict
from http import HTTPStatus
from pathlib import Path
from typing import Annotated

import bentoml
from bentoml.exceptions import BentoMLException, InvalidArgument, ServiceUnavailable
from bentoml.validators import ContentType
from pydantic import BaseModel

from components.config import load_params
from components.data import speech
from components.errors import ServiceError
from serving.batcher import MicroBatcher
from serving.model_source import AliasSource, LoadedModel
from serving.prediction_log import PredictionLog
from serving.switch import ModelSwitch, shared_folder, start_following
from serving.timeout import install as install_timeout
from stack.body_limit import ASGIApp, BodyLimit
from stack.contracts import SYNTHETIC_HEADER
from stack.gate_seal import SealError
from stack.secrets import gate_key
from stack.settings import get_settings

log = logging.getLogger("edgeloop.serving")


def _params_path() -> Path:
    return get_settings().params


def cores() -> int:
    return len(os.sched_getaffinity(0))


class ServingBodyLimit(BodyLimit):
    """Request bodies over serving.max_request_bytes are refused (413) unread."""

    def __init__(self, app: ASGIApp) -> None:
        limit = load_params(_params_path()).serving.max_request_bytes
        super().__init__(app, limit, what="serving.max_request_bytes")


class Prediction(BaseModel):
    label: int | str
    probabilities: list[float]
    model_version: str


class Heard(BaseModel):
    keyword: int | str
    confidence: float
    probabilities: list[float]
    model_version: str


# The service's shape, read once when BentoML imports this module.
SERVING = load_params(_params_path()).serving
WORKERS = SERVING.workers or cores()  # serving.workers, or one per core
install_timeout()  # BentoML's own leaves a live timer per request (serving/timeout.py)
# Routes answered many times a second; BentoML's tracing skips them (below).
HOT_ROUTES = ["/predict$", "/listen$"]
# A switch of every worker gives up (all stay on the previous version) within this,
# under the request timeout below: /refresh answers with its own error, not a 504.
SWITCH_TIMEOUT_S = 20.0


class Refused(BentoMLException):
    """409: the alias names a version serving will not load (its gate seal)."""

    error_code = HTTPStatus.CONFLICT


@bentoml.service(
    name="edgeloop",
    workers=WORKERS,
    traffic={"timeout": 30, "max_concurrency": 512},
    # BentoML's sampler records every request's spans even at its default sample
    # rate 0 (RECORD_ONLY, for its request-id header), and exports none unless an
    # exporter is configured: five recorded spans per request were 40% of
    # /predict's CPU (1.10 -> 0.66 ms a request, bench/serving_throughput.py).
    tracing={"excluded_urls": HOT_ROUTES},
    # One log line per request is off unless serving.access_log: 12% of a
    # request's CPU, and a line per request grows the serving log without end.
    logging={"access": {"enabled": SERVING.access_log}},
)
class Predictor:
    def __init__(self) -> None:
        params = load_params(_params_path())
        self.cfg = params.serving
        self.model_name = params.registry.model_name
        # Each worker's ONNX Runtime gets its share of the cores: workers never
        # oversubscribe them.
        threads = max(1, cores() // WORKERS)
        settings = get_settings()
        source = AliasSource(
            settings.tracking_uri,
            self.model_name,
            self.cfg,
            threads=threads,
            gate_key=gate_key(settings),  # a version the gates never sealed: refused
        )
        worker = bentoml.server_context.worker_index or 1
        self.models = ModelSwitch(
            source, shared_folder(), WORKERS, worker, timeout_s=SWITCH_TIMEOUT_S
        )
        start_following(self.models, poll_s=0.05, alias_poll_s=self.cfg.poll_s)
        self.batcher = MicroBatcher(LoadedModel.probabilities, self.cfg.max_batch_rows)
        self.log = PredictionLog(
            params.paths.prediction_log,
            self.cfg.log_sample_rate,
            self.cfg.log_rows_per_file,
        )
        # Everything loaded so far (the libraries, the model) lives as long as the
        # worker: out of the collector's sight, a full collection no longer stops
        # requests for 120-150 ms to scan it (it did every few seconds under load:
        # the p99).
        gc.freeze()

    @bentoml.api
    def refresh(self) -> dict:
        """Switch every worker to the version the alias names now, without waiting
        for the next poll. Safe to call by anyone on loopback: it only re-reads the
        registry."""
        try:
            before, after = self.models.switch()
        except SealError as exc:  # the previous version keeps answering
            raise Refused(str(exc)) from None
        except ServiceError as exc:
            raise ServiceUnavailable(str(exc)) from None
        return {"previous_version": before, "model_version": after}

    @bentoml.api
    def describe(self) -> dict:
        """Which model and version this service answers with, and its contract."""
        model = self.models.current()
        return {
            "model_name": self.model_name,
            "model_version": model.version,
            "variant": model.variant,
            "n_features": model.n_features,
            "classes": model.classes,
            "ranges": asdict(model.ranges),
            "workers": WORKERS,
            "batches": self.batcher.batches,
            "batched_rows": self.batcher.batched_rows,
            # versions the alias named that this worker refused, and why
            "refused": dict(self.models.refused),
        }

    # The media type said up front: without it BentoML 1.4.40 works it out from a
    # JSON schema of the output type that it generates again for every response
    # (IOMixin.mime_type), which took half of this API's time in a profile.
    @bentoml.api
    async def predict(
        self, instances: list[list[float | str | None]], ctx: bentoml.Context
    ) -> Annotated[list[Prediction], ContentType("application/json")]:
        """Classify rows of raw features; answers one Prediction per row. A model
        trained with a `features:` section takes its categories as text and a gap
        as null (where the column's policy fills it). A request with the header
        X-Edgeloop-Synthetic (a load test) is not logged for monitoring."""
        if not instances or len(instances) > self.cfg.max_request_rows:
            raise InvalidArgument(
                f"instances: expected 1 to {self.cfg.max_request_rows} "
                f"rows, got {len(instances)}"
            )
        model = self.models.current()  # one version for the whole request
        rows = model.contract.check(instances)
        probabilities = await self.batcher.submit(model, rows)
        labels = probabilities.argmax(axis=1)
        answers = [
            Prediction(
                label=model.classes[int(k)],
                probabilities=p.tolist(),
                model_version=model.version,
            )
            for k, p in zip(labels, probabilities, strict=True)
        ]
        if SYNTHETIC_HEADER in ctx.request.headers:
            return answers
        for row, answer in zip(instances, answers, strict=True):
            self.log.offer(row, answer.label, max(answer.probabilities), model.version)
        return answers

    @bentoml.api
    async def listen(
        self, clip: Annotated[Path, ContentType("audio/wav")], ctx: bentoml.Context
    ) -> Annotated[Heard, ContentType("application/json")]:
        """Spot the keyword in a clip: a WAV file (multipart field `clip`), 1 s of
        16-bit mono PCM at 16 kHz, through the MFCC front end the model was trained
        on (edge_fleet/device/audio.py, as the device agent computes it). Another
        rate, length, width or channel count is refused with a 400 that names it;
        nothing is resampled. A model of table rows refuses clips (400)."""
        model = self.models.current()
        if tuple(model.feature_columns) != tuple(speech.feature_names()):
            raise InvalidArgument(
                f"model {self.model_name} version {model.version} takes rows of "
                f"{model.n_features} features, not audio clips: use /predict"
            )
        try:
            samples = speech.read_wav(clip.read_bytes())
        except speech.ClipError as exc:
            raise InvalidArgument(f"clip: {exc}") from None
        row = speech.mfcc_rows(samples)[0].tolist()
        rows = model.contract.check([row])
        probabilities = (await self.batcher.submit(model, rows))[0]
        best = int(probabilities.argmax())
        answer = Heard(
            keyword=model.classes[best],
            confidence=float(probabilities[best]),
            probabilities=probabilities.tolist(),
            model_version=model.version,
        )
        if SYNTHETIC_HEADER not in ctx.request.headers:
            self.log.offer(row, answer.keyword, answer.confidence, model.version)
        return answer


Predictor.add_asgi_middleware(ServingBodyLimit)
