"""The fleet's TUF repository: models are published as signed targets.

Two target paths say what devices run, each with its assignment in the target's
signed custom metadata (`custom["edgeloop"]`):

- `channel/stable`: the version every eligible device runs;
- `channel/rollout`: the version a rollout is moving to, with the scope of its
  current stage (a percent of devices by a stable hash of their id, or cohorts).

A device that is in scope of `channel/rollout` runs it; every other device runs
`channel/stable`. Where a device profile's measured best is another variant than the
version's file, that profile has its own target under the channel
(`channel/stable/<profile>`, the same assignment but its file), which its devices
take before the channel's. Both are ordinary TUF targets, so a device (through
`tuf.ngclient`) refuses a tampered file, tampered or expired metadata and a replayed
older version. Keys (edge_fleet/keys.py): root's are offline (made by
`edgeloop fleet keys init`, never read here); the server holds one key per online
role and re-signs each role before it expires (`maintain`, every controller tick),
so a fleet left idle keeps valid metadata. Consistent snapshots: every metadata
version and target file is stored under its own name, so a device reading while a
new version is written never sees a mix; every file is written to a temporary name,
fsynced and renamed.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from securesystemslib.signer import CryptoSigner
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

from edge_fleet.device.files import atomic_write, commit_file
from edge_fleet.keys import (
    ONLINE_ROLES,
    FleetKeyError,
    current_root,
    signers_for,
    utc_now,
)

log = logging.getLogger("edgeloop.fleet")


class FleetRepository(Repository):
    """A file-backed TUF repository (python-tuf's `Repository` editing API) signed
    with the online keys in `key_dir` that the current root names."""

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
            Targets.type: metadata_expiry,
            Snapshot.type: metadata_expiry,
            Timestamp.type: timestamp_expiry,
        }
        self.root_version = 0
        self.signers: dict[str, CryptoSigner] = {}
        # When each online role's current version expires: set when this side
        # signs it, read from its file once (the maintenance tick runs every
        # controller tick and needs no file for it).
        self.expires: dict[str, datetime] = {}
        self._load_keys()
        if not (self.metadata_dir / "targets.json").exists():
            self._initialise()

    # -- keys and first metadata -------------------------------------------------

    def _load_keys(self) -> None:
        """The online signers the current root names (read again when an operator
        wrote a new root version: a rotated key)."""
        root = current_root(self.dir).signed
        signers = {}
        for role in ONLINE_ROLES:
            found = signers_for(self.key_dir, role, root)
            if not found:
                raise FleetKeyError(
                    f"{self.key_dir}: no {role} key that root v{root.version} names "
                    f"({', '.join(k[:16] for k in root.roles[role].keyids)})"
                )
            signers[role] = found[0]
        self.signers, self.root_version = signers, root.version

    def _initialise(self) -> None:
        self.targets_dir.mkdir(parents=True, exist_ok=True)
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
        if role == Root.type:
            raise FleetKeyError(
                "root is signed offline: `edgeloop fleet keys renew` or `rotate`"
            )
        if bump and md.signed.version >= 1 and self._path(role).exists():
            md.signed.version += 1
        md.signed.expires = utc_now() + self.expiry[role]
        md.signatures.clear()
        md.sign(self.signers[role], append=True)
        self.expires[role] = md.signed.expires
        data = md.to_bytes(JSONSerializer(compact=False))
        if role != Timestamp.type:
            atomic_write(self._path(role, md.signed.version), data)
        atomic_write(self._path(role), data)  # the current version, for this side

    def _expires(self, role: str) -> datetime:
        if role not in self.expires:
            self.expires[role] = self.open(role).signed.expires
        return self.expires[role]

    @property
    def targets_infos(self) -> dict[str, MetaFile]:
        return {"targets.json": MetaFile(self.targets().version)}

    @property
    def snapshot_info(self) -> MetaFile:
        return MetaFile(self.snapshot().version)

    # -- what the fleet publishes ------------------------------------------------

    def publish(self, channels: dict[str, tuple[Path, dict] | None]) -> None:
        """Set (file, assignment) or remove (None) channels, in one new signed
        targets version, then snapshot and timestamp. A channel set or removed
        takes its profiles' own targets (`channel/stable/<profile>`) with it, but
        for those set in the same call. Signed with the keys the current root
        names (another replica, or an operator, may have rotated one since)."""
        if current_root(self.dir).signed.version != self.root_version:
            self._load_keys()
        with self.edit_targets() as targets:
            for path, entry in channels.items():
                for stale in [
                    p
                    for p in targets.targets
                    if p.startswith(f"{path}/") and p not in channels
                ]:
                    del targets.targets[stale]
                if entry is None:
                    targets.targets.pop(path, None)
                    continue
                file, custom = entry
                info = TargetFile.from_file(path, str(file), ["sha256"])
                info.unrecognized_fields["custom"] = {"edgeloop": custom}
                digest = info.hashes["sha256"]
                # Where a device asks for it (consistent snapshots: the digest
                # before the last part of the path).
                where = Path(path)
                stored = self.targets_dir / where.parent / f"{digest}.{where.name}"
                store_target(Path(file), stored, digest)
                targets.targets[path] = info
        self.do_snapshot()
        self.do_timestamp()

    def channels(self) -> dict[str, dict]:
        """The published assignment of each channel (its custom metadata)."""
        return {
            path: dict(info.custom.get("edgeloop", {}))
            for path, info in self.targets().targets.items()
        }

    def maintain(self, *, margin: float = 0.5) -> list[str]:
        """One maintenance tick: sign with the online keys a new root version names
        (an operator rotated one), and re-sign every online role with less than
        `margin` of its lifetime left, whether or not anything was published.
        Returns the roles re-signed.

        First it finishes a publish cut short: a process killed after signing a
        new targets (or snapshot) version but before the timestamp left devices
        on the old one while this side's files name the new (`channels` would
        then agree with a database the devices never saw). Snapshot and
        timestamp sign a new version only where the role below moved on."""
        finished = [self.do_snapshot()[0], self.do_timestamp()[0]]
        if any(finished):
            log.warning(
                "finished a publish cut short: snapshot v%d, timestamp v%d",
                self.snapshot().version,
                self.timestamp().version,
            )
        resigned: list[str] = []
        if current_root(self.dir).signed.version != self.root_version:
            self._load_keys()
            log.info("root v%d: signing with its online keys", self.root_version)
            resigned = list(ONLINE_ROLES)
        else:
            now = datetime.now(UTC)
            resigned = [
                role
                for role in ONLINE_ROLES
                if self._expires(role) - now <= self.expiry[role] * margin
            ]
        if Targets.type in resigned:
            with self.edit_targets():
                pass  # a new version, re-signed, with the same targets
        if resigned:
            self.do_snapshot(force=Snapshot.type in resigned)
            self.do_timestamp(force=True)
        return resigned


def store_target(source: Path, stored: Path, digest: str) -> None:
    """The target file under its digest's name. One already there is kept only
    when its content has that digest: a copy cut short (a full disk, a crash) is
    made again, not served to every device forever."""
    if stored.exists() and _sha256(stored) == digest:
        return
    stored.parent.mkdir(parents=True, exist_ok=True)
    tmp = stored.with_name(f".{stored.name}.tmp")
    shutil.copyfile(source, tmp)
    if _sha256(tmp) != digest:
        tmp.unlink()
        raise FleetKeyError(f"{source}: its content changed while it was published")
    commit_file(tmp, stored)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
