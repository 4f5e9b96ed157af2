"""The fleet keeps updating devices for years: the server (a real process, its clock
moved with libfaketime) re-signs its TUF roles before they expire; root is signed
offline and its keys never lie where the server reads; an online key rotated
through a new root version is followed by a device enrolled before; a root not
signed by the previous root's keys is refused."""

from __future__ import annotations

import datetime as dt
import glob
import json
import subprocess
import types
from datetime import timedelta
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, Root
from tuf.ngclient._internal import trusted_metadata_set

from components.config import FleetConfig
from edge_fleet import keys
from edge_fleet.device.scope import STABLE
from edge_fleet.keys import FleetKeyError
from edge_fleet.tuf_repo import FleetRepository
from tests.conftest import BIN
from tests.edge_fleet.conftest import drive, make_root
from tests.waits import poll

pytestmark = pytest.mark.integration

LIBFAKETIME = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))


def moved_clock(days: int) -> dict[str, str]:
    """The environment that runs a process `days` ahead (libfaketime, Debian's
    `faketime`; monotonic clocks left alone so timeouts and asyncio keep time)."""
    assert LIBFAKETIME, "libfaketime missing: tests/system_packages.sh installs it"
    return {
        "LD_PRELOAD": LIBFAKETIME[0],
        "FAKETIME": f"+{days}d",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_NO_CACHE": "1",
    }


def move_device_clock(monkeypatch: pytest.MonkeyPatch, days: int) -> None:
    """The device's TUF client (python-tuf's trusted metadata set reads the time
    once per refresh from `datetime.datetime.now`) `days` ahead."""

    class Moved(dt.datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[override]
            return dt.datetime.now(tz) + timedelta(days=days)

    shim = types.SimpleNamespace(datetime=Moved, timezone=dt.timezone)
    monkeypatch.setattr(trusted_metadata_set, "datetime", shim)


def _signed(path: Path) -> dict:
    return json.loads(path.read_text())["signed"]


def _trusted_root_version(device) -> int:
    return json.loads((device.home / "tuf" / "root.json").read_text())["signed"][
        "version"
    ]


@pytest.mark.parametrize("days", [60, 400])
def test_devices_keep_updating_with_the_clock_moved(
    fleet_server, device_on_v1, monkeypatch, days
):
    """Nothing published for `days` (past snapshot's and targets' 30 days and, at
    400, the old 365-day root): the server's maintenance re-signs on its own, the
    device refreshes without an error, and a new version still arrives."""
    metadata = fleet_server.state_dir / "tuf" / "metadata"
    last = _signed(metadata / "timestamp.json")["version"]
    fleet_server.kill()
    fleet_server.start(env_extra=moved_clock(days))
    move_device_clock(monkeypatch, days)
    resigned = poll(
        lambda: _signed(metadata / "timestamp.json")["version"],
        lambda version: version > last,
        max_s=20,
        every=0.1,
    )
    assert resigned > last, "the server did not re-sign within 20 s"
    later = dt.datetime.now(dt.UTC) + timedelta(days=days)
    for role in ("timestamp", "snapshot", "targets"):  # re-signed on the moved clock
        expires = dt.datetime.fromisoformat(
            _signed(metadata / f"{role}.json")["expires"]
        )
        assert expires > later, (role, expires)
    drive([device_on_v1], lambda: device_on_v1.known_timestamp > last, max_s=10)
    assert device_on_v1.error is None, device_on_v1.error
    device_on_v1.step()
    assert device_on_v1.error is None, device_on_v1.error
    fleet_server.admin.retarget("2", f"{days} days later")
    drive([device_on_v1], lambda: device_on_v1.version == "2")
    assert device_on_v1.error is None


def test_a_rotated_timestamp_key_is_followed_by_a_device_enrolled_before(
    fleet_server, device_on_v1, tmp_path
):
    state = fleet_server.state_dir
    before = keys.current_root(state / "tuf").signed
    # The root keys are not where the server reads.
    root_ids = set(before.roles["root"].keyids)
    online = [keys.read_key(p) for p in (state / "keys").glob("*.pem")]
    assert online and not {s.public_key.keyid for s in online} & root_ids
    rotated = subprocess.run(
        [
            str(BIN / "edgeloop"),
            "fleet",
            "keys",
            "rotate",
            "timestamp",
            "--root-keys",
            str(fleet_server.root_keys),
            "--fleet-state",
            str(state),
            "--params",
            str(fleet_server.params_file),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    after = keys.current_root(state / "tuf").signed
    assert after.version == before.version + 1
    new_key = after.roles["timestamp"].keyids
    assert new_key != before.roles["timestamp"].keyids
    drive(
        [device_on_v1],
        lambda: _trusted_root_version(device_on_v1) == after.version,
        max_s=20,
    )
    timestamp = Metadata.from_file(str(state / "tuf" / "metadata" / "timestamp.json"))
    assert [s.keyid for s in timestamp.signatures.values()] == new_key
    fleet_server.admin.retarget("2", "after the rotation")
    drive([device_on_v1], lambda: device_on_v1.version == "2")
    assert device_on_v1.error is None


def test_a_root_signed_by_a_key_not_in_the_previous_root_is_refused(
    fleet_server, device_on_v1
):
    """Whoever holds the server (its online keys) cannot make devices trust a root
    of their own: root v2 signed by a key root v1 does not name is refused, and the
    device keeps its model and its root."""
    metadata = fleet_server.state_dir / "tuf" / "metadata"
    forged = Metadata[Root].from_file(str(metadata / "root.json"))
    attacker = CryptoSigner.generate_ed25519()
    for keyid in list(forged.signed.roles["root"].keyids):
        forged.signed.revoke_key(keyid, "root")
    forged.signed.add_key(attacker.public_key, "root")
    forged.signed.version += 1
    forged.signatures.clear()
    forged.sign(attacker)
    (metadata / f"{forged.signed.version}.root.json").write_bytes(forged.to_bytes())
    device_on_v1.known_timestamp = None  # look now
    device_on_v1.step()
    assert device_on_v1.version == "1"
    assert "root" in (device_on_v1.error or "") and "refused update" in (
        device_on_v1.error or ""
    ), device_on_v1.error
    assert _trusted_root_version(device_on_v1) == 1


def test_a_new_root_needs_the_threshold_of_root_keys(tmp_path: Path):
    """2 of 3: one key alone cannot sign the next root, two can; `init` runs once."""
    tuf, online, offline = tmp_path / "tuf", tmp_path / "keys", tmp_path / "root-keys"
    keys.init(tuf, online, offline, threshold=2, keys=3, expiry=timedelta(days=90))
    with pytest.raises(FleetKeyError, match="already has a root"):
        keys.init(tuf, online, offline, threshold=1, keys=1, expiry=timedelta(days=9))
    one = tmp_path / "one-key"
    one.mkdir()
    first = sorted(offline.glob("root*.pem"))[0]
    (one / first.name).write_bytes(first.read_bytes())
    with pytest.raises(FleetKeyError, match="1 of the root's keys found.*needs 2"):
        keys.new_root_version(tuf, one, expiry=timedelta(days=400))
    renewed = keys.new_root_version(tuf, offline, expiry=timedelta(days=400))
    assert renewed.signed.version == 2
    assert renewed.signed.expires > keys.utc_now() + timedelta(days=399)
    warnings = keys.warnings(tuf, online, renew_within=timedelta(days=90))
    assert warnings == []
    single = tmp_path / "single"
    make_root(single, single / "root-keys", FleetConfig(root_expiry_days=30))
    said = " ".join(
        keys.warnings(single / "tuf", single / "keys", renew_within=timedelta(days=90))
    )
    assert "signed by 1 of 1" in said and "expires in" in said


def test_a_target_cut_short_is_copied_again_at_the_next_publish(tmp_path: Path, models):
    """A publish interrupted after part of the file was stored (a full disk) does
    not leave that part to be served to every device forever."""
    make_root(tmp_path, tmp_path / "root-keys")
    repo = FleetRepository(tmp_path / "tuf", tmp_path / "keys")
    entry = (models["good-1"], {"version": "1"})
    repo.publish({STABLE: entry})
    [stored] = (repo.targets_dir / "channel").glob("*.stable")
    whole = stored.read_bytes()
    stored.write_bytes(whole[: len(whole) // 3])
    repo.publish({STABLE: entry})
    assert stored.read_bytes() == whole


def published_channels(tuf_dir: Path) -> set[str]:
    """The channels a device sees: timestamp, the snapshot version it names, the
    targets version that snapshot names."""
    metadata = tuf_dir / "metadata"
    timestamp = Metadata.from_file(str(metadata / "timestamp.json")).signed
    snapshot = Metadata.from_file(
        str(metadata / f"{timestamp.snapshot_meta.version}.snapshot.json")
    ).signed
    targets = Metadata.from_file(
        str(metadata / f"{snapshot.meta['targets.json'].version}.targets.json")
    ).signed
    return set(targets.targets)


def test_a_publish_killed_before_its_timestamp_is_finished_by_the_next_leader(
    tmp_path: Path, models, monkeypatch: pytest.MonkeyPatch
):
    """A leader killed between signing the new targets and snapshot and signing
    the timestamp left devices on the old targets while its own files named the
    new: the next leader's reconcile found nothing to publish and the rollout
    stalled (seen in CI: wave-1 paused short of quorum after a restart)."""
    make_root(tmp_path, tmp_path / "root-keys")
    repo = FleetRepository(tmp_path / "tuf", tmp_path / "keys")
    repo.publish({STABLE: (models["good-1"], {"version": "1"})})

    def killed(*args, **kwargs):
        raise SystemExit("SIGKILL")

    monkeypatch.setattr(repo, "do_timestamp", killed)
    with pytest.raises(SystemExit):
        repo.publish({"channel/rollout": (models["good-2"], {"version": "2"})})
    assert published_channels(tmp_path / "tuf") == {STABLE}

    restarted = FleetRepository(tmp_path / "tuf", tmp_path / "keys")
    restarted.maintain()
    assert published_channels(tmp_path / "tuf") == {STABLE, "channel/rollout"}
    assert set(restarted.channels()) == published_channels(tmp_path / "tuf")


def test_the_server_does_not_start_without_a_root(tmp_path: Path):
    with pytest.raises(FleetKeyError, match="edgeloop fleet keys init"):
        FleetRepository(tmp_path / "tuf", tmp_path / "keys")
