"""Attacks on the update channel, against the real fleet server and TUF's client on
the device: a tampered model file, tampered metadata, expired metadata and a
replayed older version are each refused, and the device keeps its model."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from tuf.api.metadata import Metadata, Timestamp

from edge_fleet.device.scope import STABLE
from edge_fleet.tuf_repo import FleetRepository
from tests.edge_fleet.conftest import drive

pytestmark = pytest.mark.integration


def _refused(device, server, expected: str) -> None:
    device.step()  # sees the new timestamp version, tries to update
    assert device.version == "1"
    assert device.error is not None and expected in device.error, device.error
    device.step()  # reports it
    [state] = server.admin.devices()
    assert state["current_version"] == "1" and state["health"] == "failed"
    assert expected in state["last_error"]


def test_tampered_model_file_is_refused(fleet_server, device_on_v1, models):
    fleet_server.admin.retarget("2", "test")
    digest = hashlib.sha256(models["good-2"].read_bytes()).hexdigest()
    stored = fleet_server.state_dir / "tuf" / "targets" / "channel" / f"{digest}.stable"
    data = bytearray(stored.read_bytes())
    data[100] ^= 0xFF  # one flipped bit in transit or at rest
    stored.write_bytes(bytes(data))
    _refused(device_on_v1, fleet_server, "LengthOrHashMismatchError")


def test_tampered_metadata_is_refused(fleet_server, device_on_v1):
    fleet_server.admin.retarget("2", "test")
    metadata = fleet_server.state_dir / "tuf" / "metadata"
    latest = max(
        metadata.glob("*.targets.json"), key=lambda p: int(p.name.split(".")[0])
    )
    signed = json.loads(latest.read_text())
    signed["signed"]["targets"][STABLE]["custom"]["edgeloop"]["basis_points"] = 0
    latest.write_text(json.dumps(signed))
    _refused(device_on_v1, fleet_server, "UnsignedMetadataError")


class HeldLink(httpx.BaseTransport):
    """The network between the device and the server, held by an attacker: a
    request whose path ends with `path` is answered with `body`; every other
    request reaches the real server."""

    def __init__(self, path: str, body: bytes) -> None:
        self.path, self.body = path, body
        self.server = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(self.path):
            return httpx.Response(200, content=self.body)
        return self.server.handle_request(request)


def test_expired_metadata_is_refused(fleet_server, device_on_v1):
    # A validly signed timestamp that has expired (what a server that stopped
    # re-signing would serve), put in the device's path by an attacker who wants to
    # freeze it on old metadata. The running server re-signs its own expired
    # timestamp within a tick, so the expired one travels on the link, not the disk.
    repo = FleetRepository(
        fleet_server.state_dir / "tuf", fleet_server.state_dir / "keys"
    )
    md = Metadata[Timestamp].from_file(str(repo.metadata_dir / "timestamp.json"))
    md.signed.version += 1
    md.signed.expires = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    md.sign(repo.signers[Timestamp.type])
    link = HeldLink("/tuf/metadata/timestamp.json", md.to_bytes())
    with httpx.Client(transport=link, timeout=30) as held:
        device_on_v1.http = held
        device_on_v1.known_timestamp = None  # the attacker's hint: look now
        _refused(device_on_v1, fleet_server, "ExpiredMetadataError")


def test_replayed_older_version_is_refused(fleet_server, device_on_v1, tmp_path):
    metadata = fleet_server.state_dir / "tuf" / "metadata"
    old = tmp_path / "timestamp-v1-era.json"
    shutil.copyfile(metadata / "timestamp.json", old)  # what an attacker recorded
    fleet_server.admin.retarget("2", "test")
    drive([device_on_v1], lambda: device_on_v1.version == "2")
    # Replay: serve the recorded (validly signed, unexpired) older timestamp that
    # points back at v1, with a bumped hint so the device looks.
    fleet_server.admin.retarget("1", "test")
    shutil.copyfile(old, metadata / "timestamp.json")
    device_on_v1.known_timestamp = None
    device_on_v1.step()
    assert device_on_v1.version == "2"
    assert "BadVersionNumberError" in (device_on_v1.error or ""), device_on_v1.error
