"""The work itself: plain functions over typed configs (`config/`) and paths, no
Prefect, no servers, no settings, grouped by stage; each DVC stage is a module with
a `main()`:

- `data/`: sources, `prepare`, `validate` (the contract, splits, the data card)
- `training/`: `train` (PyTorch, Keras, Opacus DP-SGD, Optuna search), the models,
  what a model takes (`inputs`), the privacy ledger, `federated/` (Flower)
- `evaluation/`: `evaluate`, the registry's gates
- `optimization/`: `optimize` (pruning, int8, ONNX/TFLite files), the device runtimes
- shared: `config/` (the params model), `errors`, `stage` (entry points), `metrics`,
  `backends` (either backend's model behind one interface)"""
