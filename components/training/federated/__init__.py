"""Federated training with Flower: Flower-free model/data code in `task.py`, thin
`client_app.py` / `server_app.py` adapters, and `simulation.py` to run them."""
