"""The fleet server's admin API, for flows, the CLI, the scenarios and tests."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import httpx

from components.errors import ServiceError
from stack.net import is_healthy
from stack.secrets import fleet_admin_token
from stack.settings import Settings


class FleetAdmin:
    def __init__(self, url: str, token: str, timeout: float = 30) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(
            base_url=f"{self.url}/v1/admin",
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )

    def _call(self, method: str, path: str, **kwargs: object) -> object:
        try:
            reply = self.http.request(method, path, **kwargs)  # type: ignore[arg-type]
        except httpx.TransportError as exc:
            raise ServiceError(
                f"fleet server at {self.url} is not answering ({exc})",
                hint="start it with `edgeloop up`",
            ) from None
        if reply.status_code >= 400:
            try:
                detail = reply.json().get("detail", reply.text)
            except ValueError:
                detail = reply.text[:300]
            raise ServiceError(
                f"fleet server: {method} {path}: {reply.status_code} {detail}"
            )
        return reply.json() if reply.content else None

    def upload(
        self,
        version: str,
        file: Path,
        *,
        model: str,
        variant: str,
        profiles: list[str],
        features: int,
        class_prior: dict[str, float] | None = None,
        lineage: dict | None = None,
    ) -> dict:
        """`version` of registered model `model`, taking `features` inputs (the
        server refuses telemetry of another width); `class_prior`: the class shares
        of the version's training data (the rollout checks predicted classes
        against it)."""
        params = {
            "model": model,
            "variant": variant,
            "filename": file.name,
            "profiles": ",".join(profiles),
            "features": str(features),
        }
        if class_prior is not None:
            params["class_prior"] = json.dumps(class_prior)
        if lineage is not None:
            params["lineage"] = json.dumps(lineage)
        return self._call(  # type: ignore[return-value]
            "PUT", f"/models/{version}", params=params, content=file.read_bytes()
        )

    def upload_profile_file(
        self, version: str, profile: str, file: Path, *, variant: str
    ) -> dict:
        """The file devices of `profile` get for uploaded `version` (that profile's
        measured best is another variant than the version's file)."""
        return self._call(  # type: ignore[return-value]
            "PUT",
            f"/models/{version}/profiles/{profile}",
            params={"variant": variant, "filename": file.name},
            content=file.read_bytes(),
        )

    def start_rollout(
        self, version: str, reason: str = "", *, supersede: bool = False
    ) -> dict:
        """{outcome, detail, rollout, superseded}: `outcome` is `started`, or a
        no-op (`already_rolling_out`, `already_stable`); with `supersede`, another
        version's active rollout is aborted in the same step."""
        return self._call(  # type: ignore[return-value]
            "POST",
            "/rollouts",
            json={"version": version, "reason": reason, "supersede": supersede},
        )

    def ledger(self, device_id: str, at: str | None = None) -> dict:
        """Which version the device ran at `at` (ISO 8601; default now) and why."""
        params = {"at": at} if at else None
        return self._call(  # type: ignore[return-value]
            "GET", f"/devices/{quote(device_id, safe='')}/ledger", params=params
        )

    def rollout(self, rollout_id: int) -> dict:
        return self._call("GET", f"/rollouts/{rollout_id}")  # type: ignore[return-value]

    def rollouts(self) -> list[dict]:
        return self._call("GET", "/rollouts")  # type: ignore[return-value]

    def act(self, rollout_id: int, action: str) -> dict:
        return self._call("POST", f"/rollouts/{rollout_id}/{action}")  # type: ignore[return-value]

    def retarget(self, version: str, reason: str) -> dict:
        return self._call(  # type: ignore[return-value]
            "POST", "/retarget", json={"version": version, "reason": reason}
        )

    def enrollment_code(
        self,
        *,
        profiles: list[str],
        cohorts: list[str],
        device_id: str | None = None,
        devices: int = 1,
        expires_in_s: int | None = None,
    ) -> dict:
        """A code that enrolls `device_id` only, or up to `devices` devices, of
        these profiles and cohorts: {id, code, ..., expires_at}."""
        body: dict = {
            "profiles": profiles,
            "cohorts": cohorts,
            "device_id": device_id,
            "devices": devices,
        }
        if expires_in_s is not None:
            body["expires_in_s"] = expires_in_s
        return self._call("POST", "/enrollment-codes", json=body)  # type: ignore[return-value]

    def revoke(self, device_id: str) -> dict:
        return self._call("POST", f"/devices/{device_id}/revoke")  # type: ignore[return-value]

    def rotate_token(self, device_id: str) -> dict:
        return self._call("POST", f"/devices/{device_id}/token")  # type: ignore[return-value]

    def delete_device(self, device_id: str) -> None:
        self._call("DELETE", f"/devices/{device_id}")

    def summary(self) -> dict:
        return self._call("GET", "/fleet")  # type: ignore[return-value]

    def devices(self, cohort: str | None = None) -> list[dict]:
        params = {"cohort": cohort} if cohort else {}
        return self._call("GET", "/devices", params=params)  # type: ignore[return-value]

    def telemetry(
        self, cohort: str | None = None, limit: int = 100, per_device: int | None = None
    ) -> list[dict]:
        params: dict = {"limit": limit} | ({"cohort": cohort} if cohort else {})
        if per_device is not None:
            params["per_device"] = per_device
        return self._call("GET", "/telemetry", params=params)  # type: ignore[return-value]

    def cohorts(self) -> list[str]:
        return self._call("GET", "/cohorts")  # type: ignore[return-value]

    def report_cohort_check(self, cohort: str, report: dict) -> dict:
        """The monitor's drift check of `cohort` at this pass (the console's
        status and trend)."""
        return self._call(  # type: ignore[return-value]
            "POST", f"/cohorts/{quote(cohort, safe='')}/checks", json=report
        )

    def cohort_checks(self, cohort: str, limit: int = 50) -> list[dict]:
        return self._call(  # type: ignore[return-value]
            "GET", f"/cohorts/{quote(cohort, safe='')}/checks", params={"limit": limit}
        )


def stack_fleet_admin(settings: Settings) -> FleetAdmin:
    """The admin client of the stack's fleet server (its URL and token from the
    settings); a one-line error when the server is not answering."""
    if not is_healthy(f"{settings.fleet_url}/health"):
        raise ServiceError(
            f"fleet server at {settings.fleet_url} is not answering",
            hint="start the services with `edgeloop up`",
        )
    return FleetAdmin(settings.fleet_url, fleet_admin_token(settings))
