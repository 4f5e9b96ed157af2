"""The `train` stage: central PyTorch or Keras training, DP-SGD with Opacus, the
Optuna search, federated training with Flower (federated/), the models, what a model
takes (inputs.py) and the privacy ledger."""
