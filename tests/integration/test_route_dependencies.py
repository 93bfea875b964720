"""No route waits on FastAPI's thread pool for its dependencies."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from tests.helpers import Store


def dependencies_of(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from dependencies_of(sub)


def test_every_dependency_of_every_route_runs_on_the_event_loop(store: Store) -> None:
    # FastAPI runs a plain `def` dependency in its thread pool: two thread hops per
    # request for a lookup of an attribute.
    contexts = iter_route_contexts(store.client.app.router.routes)
    routes = [context.route for context in contexts if isinstance(context.route, APIRoute)]
    assert any(route.path == "/checkout/{idempotency_key}" for route in routes)

    in_threads = sorted(
        f"{route.path}: {call.__qualname__}"
        for route in routes
        for call in dependencies_of(route.dependant)
        if not (inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call))
    )

    assert in_threads == []
