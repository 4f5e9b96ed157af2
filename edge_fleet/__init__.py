"""Over-the-air rollout of quantized models to edge devices: `server` (the fleet
server's FastAPI app), `controller` (canary -> waves -> full, checks, rollback),
`tuf_repo` (the signed TUF repository), `db` (devices, telemetry, rollouts), `device`
(the agent: TUF client, A/B slots, smoke test, local inference, telemetry; also its
own distribution, `edgeloop-agent`), `sim` (many simulated devices in one process)
and `client` (the admin API's client)."""
