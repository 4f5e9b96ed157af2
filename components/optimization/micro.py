"""The microcontroller's file: the trained model as a full-integer int8 TFLite file
for TensorFlow Lite Micro (edge_fleet/device/micro.py runs it).

PyTorch's model goes through its ONNX export and onnx2tf (ONNX to TensorFlow to
TFLite, full-integer quantization calibrated on training rows). The LiteRT Torch
converter was the other candidate; it cannot share the stack's environment (its
`ai-edge-litert[model-utils]` pins xdsl 0.28, which needs typing-extensions
<4.13, where pydantic-core 2.50 needs >=4.16; docs/contributing/dependencies.md),
and the ONNX file is already what every other device file is made from. A CNN is
exported with its image input ([1, 1, h, w], the standardization reshaped to
it): onnx2tf turns an NCHW graph into NHWC, and a reshape from the flat row into
NCHW inside the graph lost the layout (a max-pool over a [1, 1, 8, 32] tensor).
A Keras model's full-integer file (components/optimization/tflite.py) is the
micro file as it is."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from components.optimization.runtime import MICRO_SUFFIX
from components.stage import library_output
from components.training.model import Standardize

MICRO = "micro_int8"  # the variant's name
INPUT = "features"


class NotConvertible(RuntimeError):
    """The converter could not make a TFLM file of this model (the message says
    which step and why)."""


def micro_path(out: Path) -> Path:
    return out / f"int8{MICRO_SUFFIX}"


def export_for_micro(
    model: nn.Sequential,
    n_features: int,
    image_shape: tuple[int, int] | None,
    path: Path,
) -> Path:
    """The PyTorch model as ONNX with a fixed batch of one (a board answers one
    reading at a time): an image model takes [1, 1, h, w], anything else [1, n]."""
    model = model.eval()
    layers = list(model)
    if (
        image_shape
        and isinstance(layers[0], Standardize)
        and isinstance(layers[1], nn.Unflatten)
    ):
        h, w = image_shape
        exported = nn.Sequential(ImageInput(layers[0], h, w), *layers[2:]).eval()
        example = torch.zeros(1, 1, h, w)
    else:
        exported, example = model, torch.zeros(1, n_features)
    torch.onnx.export(
        exported,
        (example,),
        str(path),
        input_names=[INPUT],
        output_names=["logits"],
        opset_version=17,
        dynamo=False,
    )
    return path


class ImageInput(nn.Module):
    """(x - mean) / std on the image, the flat row's statistics as [1, 1, h, w]."""

    def __init__(self, standardize: Standardize, h: int, w: int) -> None:
        super().__init__()
        self.register_buffer("mean", standardize.mean.view(1, 1, h, w).clone())
        self.register_buffer("std", standardize.std.view(1, 1, h, w).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def convert_torch(
    model: nn.Sequential,
    n_features: int,
    image_shape: tuple[int, int] | None,
    calibration: np.ndarray,
    out: Path,
) -> Path:
    """`out`/int8.micro.tflite: full-integer int8 (int8 input and output), per
    tensor, calibrated on `calibration` (raw rows, as the file takes them)."""
    with tempfile.TemporaryDirectory(prefix="edgeloop-micro-") as folder:
        work = Path(folder)
        onnx_file = export_for_micro(model, n_features, image_shape, work / "m.onnx")
        rows = np.asarray(calibration, np.float32)
        if image_shape:
            rows = rows.reshape(-1, *image_shape, 1)  # NHWC, as TFLite takes it
        np.save(work / "calibration.npy", rows)
        try:
            with library_output():
                _onnx2tf(onnx_file, work)
        except Exception as exc:  # onnx2tf raises whatever TensorFlow raises
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise NotConvertible(f"onnx2tf: {type(exc).__name__}: {first}") from exc
        made = work / "tf" / "m_full_integer_quant.tflite"
        if not made.exists():
            raise NotConvertible("onnx2tf made no full-integer file")
        out.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copyfile(made, micro_path(out)))


def _onnx2tf(onnx_file: Path, work: Path) -> None:
    import onnx2tf  # imports TensorFlow: only where a model is converted

    onnx2tf.convert(
        input_onnx_file_path=str(onnx_file),
        output_folder_path=str(work / "tf"),
        output_integer_quantized_tflite=True,
        custom_input_op_name_np_data_path=[
            [INPUT, str(work / "calibration.npy"), 0.0, 1.0]
        ],
        input_quant_dtype="int8",
        output_quant_dtype="int8",
        quant_type="per-tensor",
        non_verbose=True,
    )


def from_tflite(int8_file: Path, out: Path) -> Path:
    """A Keras model's full-integer TFLite file, named as the micro file."""
    return Path(shutil.copyfile(int8_file, micro_path(out)))
