"""The gates' seal: the decision the stack's gates made on one model version, signed
with the stack's gate key (HMAC-SHA256) over the registered model's name, the
version, the shipped file's path, SHA-256, variant and device profiles, the file
each device profile gets where its measured best is another variant (path, SHA-256,
variant), and the result. Tags on a model
version are writable by anyone with EDIT on the model; the seal is not forgeable
without the key, so a release ships only what the gates passed, and only the very
file they measured."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from components.errors import EdgeloopError


class SealError(EdgeloopError):
    """A version's gate seal is missing, forged, or for another version or file."""


@dataclass(frozen=True)
class GateSeal:
    model: str
    version: str
    ship_file: str  # the run artifact a device gets
    sha256: str  # of that file, as the gates measured it
    variant: str  # which optimized variant that file is
    profiles: str  # the device profiles it may run on: comma list, or none
    gate: str  # passed | failed
    # {profile: {"file", "sha256", "variant"}}: a profile whose measured best is
    # not `variant` gets that file (components/optimization/choice.py).
    per_profile: dict[str, dict[str, str]] = field(default_factory=dict)

    def fields(self) -> dict:
        """What is signed; a seal without per-profile files signs what seals made
        before them did, so those still verify."""
        signed = asdict(self)
        if not signed["per_profile"]:
            del signed["per_profile"]
        return signed

    def mac(self, key: bytes) -> str:
        message = json.dumps(self.fields(), sort_keys=True).encode()
        return hmac.new(key, message, hashlib.sha256).hexdigest()

    def tag_value(self, key: bytes) -> str:
        """The seal as an MLflow tag value (JSON with its MAC)."""
        return json.dumps(self.fields() | {"mac": self.mac(key)}, sort_keys=True)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def signed_fields(value: str) -> tuple[dict, str]:
    """A signed tag's fields and its MAC (the seal's, a rollback order's);
    ValueError, KeyError or AttributeError when it is not JSON with a string `mac`."""
    fields = json.loads(value)
    mac = fields.pop("mac")
    if not isinstance(mac, str):
        raise ValueError("mac: expected a string")
    return fields, mac


def same_mac(given: str, expected: str) -> bool:
    """Constant-time, for any text a tag may hold (`hmac.compare_digest` refuses
    non-ASCII str: compared as bytes)."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode()
    )


def verified_seal(
    value: str | None, key: bytes, *, model: str, version: str
) -> GateSeal:
    """The seal a tag holds, when the stack's key made it for this model version
    and it says `passed`; SealError naming what is wrong otherwise."""
    where = f"{model} v{version}"
    if not value:
        raise SealError(f"{where} has no gate seal: the stack's gates never passed it")
    try:
        fields, mac = signed_fields(value)
        seal = GateSeal(**fields)
    except (ValueError, TypeError, KeyError, AttributeError):
        raise SealError(f"{where}: its gate seal is malformed") from None
    if not same_mac(mac, seal.mac(key)):
        raise SealError(
            f"{where}: its gate seal was not made by this stack's gates "
            "(signature does not match)"
        )
    if (seal.model, seal.version) != (model, str(version)):
        raise SealError(
            f"{where}: its gate seal is for {seal.model} v{seal.version} (copied "
            "from another version)"
        )
    if seal.gate != "passed":
        raise SealError(f"{where}: the gates decided {seal.gate!r}, not 'passed'")
    return seal


def check_file(seal: GateSeal, path: Path, profile: str | None = None) -> None:
    """The file about to ship (for `profile`: that profile's own) is the one the
    gates measured."""
    name, sealed = seal.ship_file, seal.sha256
    if profile is not None:
        own = seal.per_profile[profile]
        name, sealed = own["file"], own["sha256"]
    digest = file_sha256(path)
    if digest != sealed:
        raise SealError(
            f"{seal.model} v{seal.version}: {name} has SHA-256 "
            f"{digest[:12]}..., the gates measured {sealed[:12]}... (the file "
            "changed after the gates ran)"
        )
