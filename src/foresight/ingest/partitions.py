"""Asset partitions on the NATS bus: every asset's points go to one worker at a time, in order.

API nodes publish each point on ``<prefix>.<tenant>.<partition>``, the partition a hash of the
tenant and the asset tag, so one asset always lands in the same partition. Every partition has
its own durable pull consumer, and a worker consumes only the partitions it holds a lease on:

* **Leases** live in a JetStream key-value bucket whose entries expire after ``lease_ttl_s``: a
  worker renews its leases every third of that, and a worker that dies (or is cut off) loses
  them when they expire; another takes them over.
* **Balance**: workers announce themselves in the same bucket; each aims for
  ``ceil(partitions / workers)``, claims free partitions up to that and releases what it holds
  beyond it, so a new worker gets its share within a few renewals.
* **Order on a handover**: a worker that releases a partition first finishes and acknowledges
  the fetch in hand, so its successor starts where it stopped. After a crash the dead worker's
  unacknowledged messages come back after the consumer's ack wait; the successor waits for
  them before fetching anything newer (the server redelivers before it delivers new messages),
  so even then an asset's points are evaluated in order.
* **Agreement**: the partition count is recorded in the stream's meta bucket by the first
  process that starts; later ones use the recorded count (and warn if their setting differs).
"""

from __future__ import annotations

import math
import uuid
import zlib
from typing import Any

from foresight.kit.logging import get_logger

log = get_logger("foresight.ingest.nats")


def _wrong_last(exc: Exception) -> bool:
    """A compare-and-set refused: the entry is not at the revision we named (or exists)."""
    from nats.js.errors import BadRequestError, KeyWrongLastSequenceError

    if isinstance(exc, KeyWrongLastSequenceError):
        return True
    # Some server/client pairs answer with the plain API error (10071: wrong last sequence).
    return isinstance(exc, BadRequestError) and getattr(exc, "err_code", None) == 10071


def partition_of(tenant_id: uuid.UUID, tag: str, partitions: int) -> int:
    return zlib.crc32(tenant_id.bytes + tag.encode()) % partitions


def partition_subject(prefix: str, tenant_id: uuid.UUID, partition: int) -> str:
    return f"{prefix}.{tenant_id}.{partition}"


def leases_bucket(stream: str) -> str:
    return f"{stream}_LEASES"


def meta_bucket(stream: str) -> str:
    return f"{stream}_META"


async def agreed_partitions(js: Any, stream: str, wanted: int) -> int:
    """The stream's partition count: the recorded one, or ``wanted`` if this is the first."""
    from nats.js.errors import BucketNotFoundError, KeyNotFoundError

    try:
        kv = await js.key_value(meta_bucket(stream))
    except BucketNotFoundError:
        kv = await js.create_key_value(bucket=meta_bucket(stream), history=1)
    try:
        await kv.create("partitions", str(wanted).encode())
        return wanted
    except Exception as exc:
        if not _wrong_last(exc):
            raise
    try:
        recorded = int((await kv.get("partitions")).value or b"0")
    except KeyNotFoundError:  # pragma: no cover - created a moment ago by another process
        return wanted
    if recorded != wanted:
        log.warning(
            "nats_partitions_differ", setting=wanted, recorded=recorded, using=recorded,
            hint="FORESIGHT_NATS_PARTITIONS is fixed for the life of a stream",
        )  # fmt: skip
    return recorded if recorded > 0 else wanted


async def leases(js: Any, stream: str, ttl_s: float) -> Any:
    from nats.js.errors import BucketNotFoundError

    try:
        return await js.key_value(leases_bucket(stream))
    except BucketNotFoundError:
        return await js.create_key_value(bucket=leases_bucket(stream), history=1, ttl=ttl_s)


async def _create(kv: Any, key: str, value: bytes) -> int | None:
    """Create ``key`` if nobody holds it (absent, deleted or expired); its revision, or None."""
    from nats.js.errors import KeyDeletedError, KeyNotFoundError

    try:
        return int(await kv.create(key, value))
    except Exception as exc:
        if not _wrong_last(exc):
            raise
    # It exists, or only its delete marker does (older clients do not see through that).
    try:
        await kv.get(key)
        return None
    except KeyDeletedError as deleted:
        last = deleted.entry.revision if deleted.entry is not None else 0
    except KeyNotFoundError:
        return None
    try:
        return int(await kv.update(key, value, last=last))
    except Exception as exc:
        if not _wrong_last(exc):
            raise
        return None  # someone else was quicker


class Leases:
    """One worker's view of the partition leases (call :meth:`tick` every ``ttl_s / 3``)."""

    def __init__(self, kv: Any, partitions: int, worker_id: str) -> None:
        self.kv = kv
        self.partitions = partitions
        self.worker_id = worker_id
        self.held: dict[int, int] = {}  # partition → revision of our lease entry
        # Where this worker starts looking for free partitions (spreads first claims).
        self._start = zlib.crc32(worker_id.encode()) % partitions

    async def members(self) -> int:
        from nats.js.errors import NoKeysError

        try:
            keys = await self.kv.keys()  # (servers before 2.10 ignore key filters)
        except NoKeysError:
            return 1
        return max(1, sum(1 for key in keys if key.startswith("member.")))

    def fair_share(self, members: int) -> int:
        return math.ceil(self.partitions / members)

    async def renew(self) -> list[int]:
        """Renew every lease held; the partitions whose lease was lost (expired, taken)."""
        lost = []
        for partition, revision in list(self.held.items()):
            try:
                self.held[partition] = await self.kv.update(
                    f"partition.{partition}", self.worker_id.encode(), last=revision
                )
            except Exception as exc:
                if not _wrong_last(exc):
                    raise
                del self.held[partition]
                lost.append(partition)
        return lost

    async def announce(self) -> None:
        await self.kv.put(f"member.{self.worker_id}", b"")

    async def claim(self, want: int) -> list[int]:
        """Claim free partitions until ``want`` are held; the ones claimed now."""
        claimed: list[int] = []
        for i in range(self.partitions):
            if len(self.held) >= want:
                break
            partition = (self._start + i) % self.partitions
            if partition in self.held:
                continue
            revision = await _create(self.kv, f"partition.{partition}", self.worker_id.encode())
            if revision is None:
                continue  # someone holds it
            self.held[partition] = revision
            claimed.append(partition)
        return claimed

    def surplus(self, want: int, leaving: set[int]) -> list[int]:
        """More partitions to give up to get down to ``want`` (the last claimed first), beside
        those ``leaving`` already."""
        extra = len(self.held) - want - len(leaving)
        staying = [p for p in self.held if p not in leaving]
        return staying[-extra:] if extra > 0 else []

    async def release(self, partition: int) -> None:
        revision = self.held.pop(partition, None)
        if revision is None:
            return
        try:
            await self.kv.delete(f"partition.{partition}", last=revision)
        except Exception as exc:
            if not _wrong_last(exc):  # else: expired and taken meanwhile, not ours to delete
                raise

    async def leave(self) -> None:
        for partition in list(self.held):
            await self.release(partition)
        try:
            await self.kv.delete(f"member.{self.worker_id}")
        except Exception:  # noqa: BLE001 - it expires by itself
            log.warning("nats_member_delete_failed", worker=self.worker_id)
