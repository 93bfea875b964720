"""`widget-store node`: the checkout orchestrator, as JSON lines on standard input and output.

It reads one message per line and answers on standard output (logs go to standard
error). `init` is answered `init_ok`; each `checkout` starts a durable saga
(`node_checkout.py`) that sends its step messages as it goes, while the node reads on.
A line it cannot use gets an `error` reply, and the node carries on. At the end of its
input it waits for every saga it runs to end, then exits.

The node is a DBOS application of its own (`widget-store-node`, one executor) on the
store's database: the embedded SQLite file by default, `WIDGET_STORE_DATABASE_URL` otherwise.
Killed, and started again on the same database, it recovers the sagas it was running and
they send the rest of their messages. Run one node per database at a time: a second one
would recover the first one's sagas as its own.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import IO, Any

import httpx
from dbos import DBOS, SetWorkflowID, WorkflowHandleAsync

from widget_store import durability, faults, queries
from widget_store import node_protocol as protocol
from widget_store.checkpoints import Workflow, node_saga_id
from widget_store.config import Settings
from widget_store.domain import CheckoutRequest, LineItem
from widget_store.migrate import migrate
from widget_store.node_checkout import (
    NodeSaga,
    install_output,
    node_checkout_workflow,
    seed_catalog,
)
from widget_store.node_protocol import (
    CheckoutMessage,
    Envelope,
    ErrorCode,
    MessageType,
    ProtocolError,
)
from widget_store.simulated.carrier import SimulatedCarrier
from widget_store.simulated.provider import SimulatedPaymentProvider

log = logging.getLogger("widget_store.node")
# A DBOS application of its own: it never runs the store's schedules or dequeues its
# work, and the store's processes never take the node's recovered sagas off the queue.
# DBOS wants its application versions unique across the applications of one system
# database, so the node's is the store's pinned version, marked.
NODE_APP_NAME = "widget-store-node"
NODE_EXECUTOR_ID = "widget-store-node"


def node_version(store_version: str) -> str:
    return f"{store_version}-node"


class LineOutput:
    """Standard output: one message per line, numbered by the node's own msg_id counter.

    Sagas write from DBOS steps, the line loop from its replies: a lock keeps each line
    whole and the numbers in the order the lines are written. A reader that has gone
    (a closed pipe) loses the rest of the messages, never a saga: writing never fails a
    step, so every saga still completes or compensates, durably.
    """

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._next_id = 0
        self._gone = False

    def send(self, envelope: Envelope) -> None:
        with self._lock:
            body = {**envelope.body, "msg_id": self._next_id}
            self._next_id += 1
            if self._gone:
                return
            try:
                self._stream.write(protocol.encode(replace(envelope, body=body)) + "\n")
                self._stream.flush()
            except (OSError, ValueError) as error:  # a broken pipe, a closed stream
                self._gone = True
                log.warning("node: standard output is gone (%r); the sagas carry on", error)


class Node:
    """Answers each line; keeps track of the sagas it waits for before it exits."""

    def __init__(self, output: LineOutput, settings: Settings) -> None:
        self._output = output
        self._settings = settings
        self._waiting: set[asyncio.Task[None]] = set()

    async def read(self, stream: IO[bytes]) -> None:
        """Handle every line of `stream` until it ends (blank lines are skipped)."""
        loop = asyncio.get_running_loop()
        # Its own thread, so a blocked read never takes one DBOS needs.
        with ThreadPoolExecutor(1, thread_name_prefix="node-stdin") as reader:
            while raw := await loop.run_in_executor(reader, _read_line, stream):
                if raw.strip():
                    await self.handle(raw)

    async def handle(self, raw: bytes) -> None:
        envelope: Envelope | None = None
        try:
            envelope = protocol.parse_line(raw.rstrip(b"\r\n"))
            kind = protocol.message_type(envelope)
            if kind is MessageType.INIT:
                self._output.send(envelope.reply(protocol.init_ok()))
            else:
                await self._checkout(envelope, protocol.parse_checkout(envelope))
        except ProtocolError as refused:
            self._refuse(refused.reply_to, refused.code, refused.text)
        except Exception as failure:  # the database down, say: this line fails, not the node
            log.exception("node: a message failed: %r", failure)
            text = (
                f"the node failed on this message ({type(failure).__name__}); nothing was started"
            )
            self._refuse(envelope, ErrorCode.CRASH, text)

    def _refuse(self, to: Envelope | None, code: ErrorCode, text: str) -> None:
        body = protocol.error(code, text)
        if to is None:  # nothing usable: an answer to nobody in particular
            self._output.send(Envelope(src=None, dest=None, body=body))
        else:
            self._output.send(to.reply(body))

    async def _checkout(self, envelope: Envelope, message: CheckoutMessage) -> None:
        skus = [line.sku for line in message.items]
        async with durability.services().engine.connect() as db:
            known = await queries.product_ids_by_sku(db, skus)
        unknown = [sku for sku in skus if sku not in known]
        if unknown:
            raise ProtocolError(
                ErrorCode.KEY_DOES_NOT_EXIST,
                f"unknown sku: {', '.join(unknown)}",
                reply_to=envelope,
            )
        request = CheckoutRequest.of(
            [LineItem(known[line.sku], line.quantity) for line in message.items],
            message.shipping_address,
        )
        saga = NodeSaga(message, request, tuple((sku, known[sku]) for sku in skus))
        with SetWorkflowID(node_saga_id(message.saga_id)):
            handle = await DBOS.start_workflow_async(node_checkout_workflow, saga)
        if durability.started_here(handle):  # a new saga: it says everything itself
            self._wait_for(handle.get_result())
        else:  # the saga ID is taken: the same saga, answered with its outcome
            self._wait_for(self._answer_repeat(envelope, message, handle))

    async def _answer_repeat(
        self, envelope: Envelope, message: CheckoutMessage, handle: WorkflowHandleAsync[Any]
    ) -> None:
        try:
            statuses = await DBOS.list_workflows_async(
                workflow_ids=[handle.workflow_id], load_output=False
            )
            first = statuses[0].input["args"][0] if statuses and statuses[0].input else None
            if not isinstance(first, NodeSaga) or not first.checkout.same_request(message):
                self._refuse(
                    envelope,
                    ErrorCode.PRECONDITION_FAILED,
                    f"saga {message.saga_id!r} was started with a different checkout",
                )
                return
            outcome = await handle.get_result()
        except Exception as failure:  # the saga ended in error, or the database is down
            text = f"the saga's outcome is unavailable: {type(failure).__name__}"
            self._refuse(envelope, ErrorCode.CRASH, text)
            return
        self._output.send(envelope.reply(outcome))

    def _wait_for(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(_logged(work))
        self._waiting.add(task)
        task.add_done_callback(self._waiting.discard)

    async def follow_recovered(self) -> None:
        """Wait, too, for the sagas DBOS recovered at launch (a previous run's)."""
        recovered = await DBOS.list_workflows_async(
            status=["PENDING", "ENQUEUED"],
            name=Workflow.NODE_CHECKOUT.value,
            executor_id=NODE_EXECUTOR_ID,
            app_version=self._settings.app_version,
            load_input=False,
            load_output=False,
        )
        for workflow in recovered:
            log.warning("node: carrying on saga %s from a previous run", workflow.workflow_id)
            handle: WorkflowHandleAsync[Any] = await DBOS.retrieve_workflow_async(
                workflow.workflow_id
            )
            self._wait_for(handle.get_result())

    async def drain(self) -> None:
        while self._waiting:
            await asyncio.wait(list(self._waiting))


async def _logged(work: Coroutine[Any, Any, Any]) -> None:
    try:
        await work
    except Exception as failure:  # a saga that ended in error: logged, the node goes on
        log.error("node: a saga ended in error: %r", failure)


def _read_line(stream: IO[bytes]) -> bytes:
    """The next line, cut at the protocol's limit; the rest of an overlong line is skipped
    (it then fails to parse as JSON, and is answered as malformed)."""
    line = stream.readline(protocol.MAX_LINE_BYTES + 1)
    if len(line) > protocol.MAX_LINE_BYTES and not line.endswith(b"\n"):
        while (rest := stream.readline(protocol.MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
            pass
    return line


def _no_webhooks() -> httpx.AsyncClient:
    raise RuntimeError("the node charges directly: its provider sends no webhooks")


def run_node(
    settings: Settings,
    *,
    crash_after: Iterable[str] = (),
    fail_in: Iterable[str] = (),
) -> None:
    """Migrate the database, then run the node until its input ends and its sagas are done.

    `crash_after` and `fail_in` arm the fault-injection hooks (tests only).
    """
    settings = replace(
        settings, executor_id=NODE_EXECUTOR_ID, app_version=node_version(settings.app_version)
    )
    migrate(settings)
    asyncio.run(_run(settings, list(crash_after), list(fail_in)))


async def _run(settings: Settings, crash_after: list[str], fail_in: list[str]) -> None:
    output = LineOutput(sys.stdout)
    install_output(output)
    durability.internal_queue()  # polled fast: recovered sagas resume at once
    durability.pace_dbos_background_work()
    config = durability.dbos_config(settings)
    config["name"] = NODE_APP_NAME
    DBOS(config=config)
    engine = durability.create_store_engine(settings)
    provider = SimulatedPaymentProvider(
        durability.writer(engine), settings.webhook_secret, _no_webhooks
    )
    durability.install(
        durability.CheckoutServices(
            engine=engine,
            payments=provider,
            shipping=SimulatedCarrier(durability.writer(engine)),
            payment_timeout_s=settings.payment_timeout_s,
            dispatch_s=0.0,  # the protocol's checkout ends at the shipment
            compensation_attempts=settings.compensation_attempts,
            dead_letter_retry_s=settings.dead_letter_retry_s,
            app_version=settings.app_version,
            executors=frozenset({NODE_EXECUTOR_ID}),
            stuck_after_s=settings.stuck_after_s,
            charges=provider,
        )
    )
    try:
        await seed_catalog()
        DBOS.launch()
        node = Node(output, settings)
        await node.follow_recovered()
        for name in crash_after:
            faults.arm_crash_after(name)
        for name in fail_in:
            faults.arm_failure_in(name)
        await node.read(sys.stdin.buffer)
        await node.drain()
    finally:
        DBOS.destroy()
        await engine.dispose()
