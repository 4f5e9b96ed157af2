"""The serving benchmark's baseline: the same champion file behind a minimal FastAPI
endpoint, one request at a time, no batching: what a user writes by hand.

    python -m bench.baseline_server --port 3100 [--params params.yaml]
(MLflow from the settings)"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from components.config import load_params
from serving.model_source import AliasSource
from stack.settings import get_settings


class Request(BaseModel):
    instances: list[list[float]]


def create_app(params_file: Path) -> FastAPI:
    params = load_params(params_file)
    source = AliasSource(
        get_settings().tracking_uri, params.registry.model_name, params.serving
    )
    model = source.load(source.current_version())
    app = FastAPI()

    @app.post("/predict")
    def predict(request: Request) -> list[dict]:
        probabilities = model.probabilities(np.asarray(request.instances, np.float32))
        return [
            {
                "label": model.classes[int(p.argmax())],
                "probabilities": p.tolist(),
                "model_version": model.version,
            }
            for p in probabilities
        ]

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.params), host="127.0.0.1", port=args.port, log_level="warning"
    )
