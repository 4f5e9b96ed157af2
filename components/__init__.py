"""The work itself: plain functions over typed configs (`config`) and paths, no
Prefect, no servers, no settings. Each DVC stage is a module with a `main()`
(`prepare`, `validate`, `train`, `evaluate`, `optimize`); beside them the data
(`data`, `contract`, `split`, `datacard`), training (`model`, `inputs`,
`torch_train`, `keras_train`, `privacy`, `search`, `federated/`), the backends' one
interface (`backends`), optimization (`compress`, `tflite`, `runtime`) and the gates."""
