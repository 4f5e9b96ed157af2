"""The fleet's TUF keys: root offline, the online roles with the server.

TUF's root role says which keys may sign each role and how many must (its
threshold); a device trusts a new root version only when a threshold of the
previous root's keys and of its own signed it (python-tuf's client walks that
chain). So:

- **root keys** are made by `edgeloop fleet keys init` into a folder the fleet
  server never reads (`--root-keys`; docs/concepts/fleet.md says where an
  operator keeps it)
  and are needed again only to sign a new root version: `renew` (a later expiry)
  or `rotate ROLE` (a new online key);
- **online keys** (targets, snapshot, timestamp) lie in the server's key folder,
  one PEM file per key named by role and key id; the server signs with the key the
  current root names for each role, and re-signs its roles before they expire
  (`FleetRepository.maintain`), with or without a new model.

Every file is written to a temporary name, fsynced and renamed (then its folder
fsynced), so a crash or a full disk leaves the previous version, never half of one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner, SSlibKey
from tuf.api.metadata import Metadata, Root, Snapshot, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer

from components.errors import EdgeloopError
from edge_fleet.device.files import atomic_write

ONLINE_ROLES = (Targets.type, Snapshot.type, Timestamp.type)


class FleetKeyError(EdgeloopError):
    """A key or root operation that cannot be done as asked."""


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


# -- files ---------------------------------------------------------------------------


def make_key(folder: Path, role: str) -> CryptoSigner:
    """A new ed25519 key for `role`, saved as `<role>-<keyid[:16]>.pem` (mode 600)."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    signer = CryptoSigner.generate_ed25519()
    keyid = signer.public_key.keyid
    atomic_write(folder / f"{role}-{keyid[:16]}.pem", signer.private_bytes, mode=0o600)
    return signer


def read_key(path: Path) -> CryptoSigner:
    try:
        private = load_pem_private_key(path.read_bytes(), None)
    except (OSError, ValueError, TypeError) as error:
        raise FleetKeyError(f"{path}: not a readable private key ({error})") from None
    public = SSlibKey.from_crypto(private.public_key())  # type: ignore[arg-type]
    return CryptoSigner(private, public)


def signers_for(folder: Path, role: str, root: Root) -> list[CryptoSigner]:
    """The keys in `folder` that `root` names for `role` (files `<role>*.pem`; a
    key of another role or a revoked one is not used)."""
    wanted = set(root.roles[role].keyids)
    found = [read_key(p) for p in sorted(folder.glob(f"{role}*.pem"))]
    return [s for s in found if s.public_key.keyid in wanted]


# -- root ----------------------------------------------------------------------------


def metadata_dir(tuf_dir: Path) -> Path:
    return tuf_dir / "metadata"


def current_root(tuf_dir: Path) -> Metadata[Root]:
    path = metadata_dir(tuf_dir) / "root.json"
    if not path.exists():
        raise FleetKeyError(
            f"no TUF root in {path.parent}: run `edgeloop fleet keys init` first"
        )
    return Metadata[Root].from_file(str(path))


def write_root(tuf_dir: Path, md: Metadata[Root]) -> None:
    data = md.to_bytes(JSONSerializer(compact=False))
    folder = metadata_dir(tuf_dir)
    atomic_write(folder / f"{md.signed.version}.root.json", data)
    atomic_write(folder / "root.json", data)


def init(
    tuf_dir: Path,
    online_dir: Path,
    root_dir: Path,
    *,
    threshold: int,
    keys: int,
    expiry: timedelta,
    exist_ok: bool = False,
) -> Metadata[Root] | None:
    """Root keys (`keys` of them, `threshold` to sign) into `root_dir`, one key per
    online role into `online_dir`, and the first root version signed by all root
    keys. When the repository already has a root: refused, or with `exist_ok`
    (the embedded default's `edgeloop up`) nothing done and None returned."""
    if not 1 <= threshold <= keys:
        raise FleetKeyError(
            f"threshold {threshold} of {keys} root keys: expected 1 <= threshold "
            "<= keys"
        )
    if (metadata_dir(tuf_dir) / "root.json").exists():
        if exist_ok:
            return None
        raise FleetKeyError(
            f"{metadata_dir(tuf_dir)} already has a root: devices trust it; use "
            "`edgeloop fleet keys rotate` or `renew`"
        )
    root_signers = [make_key(root_dir, Root.type) for _ in range(keys)]
    root = Root(consistent_snapshot=True, expires=utc_now() + expiry)
    for signer in root_signers:
        root.add_key(signer.public_key, Root.type)
    root.roles[Root.type].threshold = threshold
    for role in ONLINE_ROLES:
        root.add_key(make_key(online_dir, role).public_key, role)
    md = Metadata(root)
    for signer in root_signers:
        md.sign(signer, append=True)
    metadata_dir(tuf_dir).mkdir(parents=True, exist_ok=True)
    write_root(tuf_dir, md)
    return md


def new_root_version(
    tuf_dir: Path,
    root_dir: Path,
    *,
    expiry: timedelta,
    rotate: tuple[str, CryptoSigner] | None = None,
) -> Metadata[Root]:
    """The next root version, signed by the root keys found in `root_dir` (at least
    the current threshold of them), with a new expiry and, with `rotate`, the
    role's keys replaced by the one given. Checked as a device checks it (signed
    by a threshold of the previous root's keys and of its own) before it is
    written."""
    previous = current_root(tuf_dir)
    signers = signers_for(root_dir, Root.type, previous.signed)
    needed = previous.signed.roles[Root.type].threshold
    if len(signers) < needed:
        raise FleetKeyError(
            f"{root_dir}: {len(signers)} of the root's keys found, signing a new "
            f"root needs {needed}"
        )
    md = Metadata[Root].from_bytes(previous.to_bytes())
    root = md.signed
    if rotate is not None:
        role, signer = rotate
        for keyid in list(root.roles[role].keyids):
            root.revoke_key(keyid, role)
        root.add_key(signer.public_key, role)
    root.version += 1
    root.expires = utc_now() + expiry
    md.signatures.clear()
    for signer in signers:
        md.sign(signer, append=True)
    previous.signed.verify_delegate(Root.type, md.signed_bytes, md.signatures)
    root.verify_delegate(Root.type, md.signed_bytes, md.signatures)
    write_root(tuf_dir, md)
    return md


def rotate(
    tuf_dir: Path, online_dir: Path, root_dir: Path, role: str, *, expiry: timedelta
) -> Metadata[Root]:
    """A new key for online `role` (the old one revoked) in a new root version; the
    fleet server signs with it from its next maintenance tick."""
    if role not in ONLINE_ROLES:
        raise FleetKeyError(
            f"role {role!r}: expected one of {', '.join(ONLINE_ROLES)} (root's own "
            "keys are not rotated by this command)"
        )
    current_root(tuf_dir)  # a clear error before a key is made
    signer = make_key(online_dir, role)
    return new_root_version(tuf_dir, root_dir, expiry=expiry, rotate=(role, signer))


def warnings(tuf_dir: Path, online_dir: Path, *, renew_within: timedelta) -> list[str]:
    """What an operator should act on: a root signed by one key, a root key where
    the server reads, a root that expires soon."""
    root = current_root(tuf_dir).signed
    said = []
    threshold = root.roles[Root.type].threshold
    if threshold < 2:
        said.append(
            f"root v{root.version} is signed by {threshold} of "
            f"{len(root.roles[Root.type].keyids)} key(s): a fleet that matters "
            "keeps 2 of 3 apart, offline (docs/concepts/fleet.md)"
        )
    online_root = [
        p.name
        for p in sorted(online_dir.glob("*.pem"))
        if read_key(p).public_key.keyid in root.roles[Root.type].keyids
    ]
    if online_root:
        said.append(
            f"{online_dir} (read by the fleet server) holds root key(s) "
            f"{', '.join(online_root)}: move them offline"
        )
    left = root.expires - datetime.now(UTC)
    if left < renew_within:
        said.append(
            f"root v{root.version} expires in {max(left.days, 0)} days: "
            "`edgeloop fleet keys renew` with the root keys"
        )
    return said
