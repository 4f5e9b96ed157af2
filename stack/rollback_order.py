"""A downgrade is a rollback, said out loud. Shipping a version older than the one
running (by registry version number) is done only with a rollback order: the
registered model, the version rolled back to, the version it replaced, who and why,
signed with the stack's gate key as the gates' seal is. `edgeloop rollback` writes
it as a tag on the version rolled back to, before it moves the alias; serving's
switch and the fleet release check it. A user with EDIT on the model can move an
alias and write tags, not sign an order: an alias set to an older version without
one is refused at both doors, and the message says how to roll back."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import asdict, dataclass

from stack.gate_seal import SealError, same_mac, signed_fields


class DowngradeRefused(SealError):
    """An older version than the running one, without a valid rollback order."""


@dataclass(frozen=True)
class RollbackOrder:
    model: str
    version: str  # the version rolled back to
    replaces: str  # the champion it replaced when ordered
    who: str
    why: str
    at: str  # ISO time of the order

    def mac(self, key: bytes) -> str:
        message = json.dumps(asdict(self), sort_keys=True).encode()
        return hmac.new(key, message, hashlib.sha256).hexdigest()

    def tag_value(self, key: bytes) -> str:
        return json.dumps(asdict(self) | {"mac": self.mac(key)}, sort_keys=True)


def is_older(version: str, running: str) -> bool:
    """Registry versions are numbered in the order they were registered; anything
    else (a version uploaded to the fleet by hand) is not compared."""
    return version.isdigit() and running.isdigit() and int(version) < int(running)


def check_downgrade(
    value: str | None, key: bytes, *, model: str, version: str, running: str | None
) -> RollbackOrder | None:
    """None when `version` is not older than `running`; the order when one signed
    with `key` rolls `model` back to `version` from `running` or a newer version;
    DowngradeRefused saying how to roll back otherwise."""
    if running is None or not is_older(version, running):
        return None
    how = (
        f"{model} v{version} is older than v{running}, which runs now: a downgrade "
        f"ships only as an explicit rollback (edgeloop rollback --to {version} "
        "--reason WHY)"
    )
    if not value:
        raise DowngradeRefused(how)
    try:
        fields, mac = signed_fields(value)
        order = RollbackOrder(**fields)
    except (ValueError, TypeError, KeyError, AttributeError):
        raise DowngradeRefused(f"{how}; its rollback order is malformed") from None
    if not same_mac(mac, order.mac(key)):
        raise DowngradeRefused(
            f"{how}; its rollback order was not signed with this stack's gate key"
        )
    if (order.model, order.version) != (model, str(version)):
        raise DowngradeRefused(
            f"{how}; its rollback order is for {order.model} v{order.version}"
        )
    # An order covers a door running the version it replaced or an older one; a
    # newer champion since then needs a new order.
    if is_older(order.replaces, running):
        raise DowngradeRefused(
            f"{how}; its rollback order replaced v{order.replaces}, and v{running} "
            "came after it"
        )
    return order
