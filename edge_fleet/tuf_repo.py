"""The fleet's TUF repository: models are published as signed targets.

Two target paths say what devices run, each with its assignment in the target's
signed custom metadata (`custom["edgeloop"]`):

- `channel/stable`: the version every eligible device runs;
- `channel/rollout`: the version a rollout is moving to, with the scope of its
  current stage (a percent of devices by a stable hash of their id, or cohorts).

A device that is in scope of `channel/rollout` runs it; every other device runs
`channel/stable`. Both are ordinary TUF targets, so a device (through
`tuf.ngclient`) refuses a tampered file, tampered or expired metadata and a replayed
older version. Keys: one ed25519 key per top-level role, PEM files in the key folder
(under the state folder, never in the repository's tracked files). Consistent
snapshots: every metadata version and target file is stored under its own name, so
a device reading while a new version is written never sees a mix.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner, SSlibKey
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer
from tuf.repository import Repository

from stack.contracts import Channel

STABLE, ROLLOUT = Channel.STABLE.value, Channel.ROLLOUT.value
ROLES = (Root.type, Targets.type, Snapshot.type, Timestamp.type)
ROOT_EXPIRY = timedelta(days=365)


def bucket(device_id: str) -> int:
    """A device's place in 0..9999 for percent stages (in basis points: TUF's
    canonical JSON has no floats); the same on server and device."""
    return int(hashlib.sha256(device_id.encode()).hexdigest()[:8], 16) % 10_000


def in_scope(custom: dict, device_id: str, cohort: str, profile: str) -> bool:
    """Whether a channel's assignment covers this device."""
    if profile not in custom.get("profiles", [profile]):
        return False
    if cohort in custom.get("cohorts", []):
        return True
    return bucket(device_id) < int(custom.get("basis_points", 10_000))


class FleetRepository(Repository):
    """A file-backed TUF repository (python-tuf's `Repository` editing API)."""

    def __init__(
        self,
        root: Path,
        key_dir: Path,
        *,
        timestamp_expiry: timedelta = timedelta(days=1),
        metadata_expiry: timedelta = timedelta(days=30),
    ) -> None:
        self.dir = root
        self.metadata_dir = root / "metadata"
        self.targets_dir = root / "targets"
        self.key_dir = key_dir
        self.expiry = {
            Root.type: ROOT_EXPIRY,
            Targets.type: metadata_expiry,
            Snapshot.type: metadata_expiry,
            Timestamp.type: timestamp_expiry,
        }
        self.signers = self._load_or_make_keys()
        if not (self.metadata_dir / "root.json").exists():
            self._initialise()

    # -- keys and first metadata -------------------------------------------------

    def _load_or_make_keys(self) -> dict[str, CryptoSigner]:
        self.key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        signers = {}
        for role in ROLES:
            path = self.key_dir / f"{role}.pem"
            if path.exists():
                private = load_pem_private_key(path.read_bytes(), None)
                public = SSlibKey.from_crypto(private.public_key())  # type: ignore[arg-type]
                signers[role] = CryptoSigner(private, public)
            else:
                signer = CryptoSigner.generate_ed25519()
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out:
                    out.write(signer.private_bytes)
                signers[role] = signer
        return signers

    def _initialise(self) -> None:
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        root = Root(consistent_snapshot=True)
        for role in ROLES:
            root.add_key(self.signers[role].public_key, role)
        self.close(Root.type, Metadata(root), bump=False)
        self.close(Targets.type, Metadata(Targets()), bump=False)
        self.do_snapshot(force=True)
        self.do_timestamp(force=True)

    # -- Repository interface ----------------------------------------------------

    def _path(self, role: str, version: int | None = None) -> Path:
        if role == Timestamp.type:
            return self.metadata_dir / "timestamp.json"
        if version is None:
            return self.metadata_dir / f"{role}.json"
        return self.metadata_dir / f"{version}.{role}.json"

    def open(self, role: str) -> Metadata:
        path = self._path(role)
        if not path.exists():
            kinds = {Snapshot.type: Snapshot, Timestamp.type: Timestamp}
            return Metadata(kinds[role]())
        return Metadata.from_file(str(path))

    def close(self, role: str, md: Metadata, *, bump: bool = True) -> None:
        if bump and md.signed.version >= 1 and self._path(role).exists():
            md.signed.version += 1
        md.signed.expires = datetime.now(UTC).replace(microsecond=0) + self.expiry[role]
        md.signatures.clear()
        md.sign(self.signers[role], append=True)
        data = md.to_bytes(JSONSerializer(compact=False))
        if role != Timestamp.type:
            _atomic_write(self._path(role, md.signed.version), data)
        _atomic_write(self._path(role), data)  # the current version, for this side

    @property
    def targets_infos(self) -> dict[str, MetaFile]:
        return {"targets.json": MetaFile(self.targets().version)}

    @property
    def snapshot_info(self) -> MetaFile:
        return MetaFile(self.snapshot().version)

    # -- what the fleet publishes ------------------------------------------------

    def publish(self, channels: dict[str, tuple[Path, dict] | None]) -> None:
        """Set (file, assignment) or remove (None) channels, in one new signed
        targets version, then snapshot and timestamp."""
        with self.edit_targets() as targets:
            for path, entry in channels.items():
                if entry is None:
                    targets.targets.pop(path, None)
                    continue
                file, custom = entry
                info = TargetFile.from_file(path, str(file), ["sha256"])
                info.unrecognized_fields["custom"] = {"edgeloop": custom}
                digest = info.hashes["sha256"]
                stored = self.targets_dir / "channel" / f"{digest}.{Path(path).name}"
                if not stored.exists():
                    stored.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(file, stored)
                targets.targets[path] = info
        self.do_snapshot()
        self.do_timestamp()

    def channels(self) -> dict[str, dict]:
        """The published assignment of each channel (its custom metadata)."""
        return {
            path: dict(info.custom.get("edgeloop", {}))
            for path, info in self.targets().targets.items()
        }

    def refresh_timestamp(self, *, margin: float = 0.5) -> bool:
        """Re-sign timestamp when less than `margin` of its lifetime is left (a
        device refuses expired metadata). Returns whether it was re-signed."""
        left = self.timestamp().expires - datetime.now(UTC)
        if left > self.expiry[Timestamp.type] * margin:
            return False
        self.do_timestamp(force=True)
        return True


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
