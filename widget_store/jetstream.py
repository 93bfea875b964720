"""The NATS JetStream side of the event stream: the stream, and the relay's broker.

One stream, `WIDGET_STORE`, keeps every subject under `widget_store.>` on disk. Its
duplicate window is how long JetStream remembers a message ID (`Nats-Msg-Id`, the
event's ID): a republished event within it is acknowledged as a duplicate and not
stored again.
"""

from __future__ import annotations

import logging

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import Header, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from widget_store.events import SUBJECT_PREFIX

log = logging.getLogger("widget_store.jetstream")

STREAM = "WIDGET_STORE"
STREAM_SUBJECTS = [f"{SUBJECT_PREFIX}.>"]
# Long enough to cover a relay restarting and republishing what it had not marked sent
# (consumers ignore older copies by sequence number anyway); JetStream's default is 2 min.
DUPLICATE_WINDOW_S = 600.0
PUBLISH_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 2


def stream_config() -> StreamConfig:
    return StreamConfig(
        name=STREAM,
        subjects=STREAM_SUBJECTS,
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_S,
    )


async def ensure_stream(js: JetStreamContext) -> None:
    """Create the stream, or bring an existing one's subjects and window up to date."""
    wanted = stream_config()
    try:
        info = await js.stream_info(STREAM)
    except NotFoundError:
        await js.add_stream(wanted)
        log.info("created the JetStream stream %s", STREAM)
        return
    current = info.config
    if current.subjects != wanted.subjects or current.duplicate_window != wanted.duplicate_window:
        await js.update_stream(wanted)


async def _log_error(error: Exception) -> None:
    # nats-py's default prints a traceback for every failed attempt.
    log.warning("nats: %s", error or type(error).__name__)


async def connect(url: str, *, name: str, reconnect: bool) -> Client:
    """Connect to NATS (`url` may list several servers, comma-separated).

    With `reconnect`, the client reconnects by itself, forever, including on the first
    attempt; without it, a lost connection stays lost and the caller decides.
    """
    return await nats.connect(
        servers=[server.strip() for server in url.split(",")],
        name=name,
        connect_timeout=CONNECT_TIMEOUT_S,
        allow_reconnect=reconnect,
        # nats-py's first connect loops forever at 0 or -1; 1 gives up after a retry.
        max_reconnect_attempts=-1 if reconnect else 1,
        reconnect_time_wait=1,
        error_cb=_log_error,
    )


class JetStreamBroker:
    """The relay's broker on JetStream: publish with Nats-Msg-Id, wait for the ack."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._js = client.jetstream(timeout=PUBLISH_TIMEOUT_S)

    @classmethod
    async def connect(cls, url: str, *, name: str = "widget-store-relay") -> JetStreamBroker:
        """Connect and make sure the stream exists.

        No automatic reconnection: while disconnected nats-py would buffer publishes and
        send them on reconnect, long after the relay gave up on them. The relay
        reconnects itself and republishes from its first unacknowledged event instead.
        """
        client = await connect(url, name=name, reconnect=False)
        try:
            await ensure_stream(client.jetstream(timeout=PUBLISH_TIMEOUT_S))
        except BaseException:
            await client.close()
            raise
        return cls(client)

    async def publish(self, subject: str, payload: bytes, *, key: str, dedup_id: str) -> bool:
        """Publish to the stream and wait for its ack; True if it was a duplicate.

        JetStream keeps one stream's messages in the order it acknowledged them, so the
        partition `key` is not needed here: the relay's in-order publishing is enough.
        """
        ack = await self._js.publish(
            subject,
            payload,
            timeout=PUBLISH_TIMEOUT_S,
            stream=STREAM,  # refused unless it lands in our stream
            headers={Header.MSG_ID.value: dedup_id},
        )
        return bool(ack.duplicate)

    async def close(self) -> None:
        """Close the connection (nothing is left buffered: every publish was awaited)."""
        await self._client.close()
