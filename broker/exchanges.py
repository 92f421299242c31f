"""Exchanges: where a publish finds its queues. Types ``direct``, ``fanout``, ``topic``, ``headers``.

An exchange maps a routing key (and headers) to a set of destinations, each a queue or another
exchange (exchange-to-exchange bindings, a RabbitMQ extension). Destinations are objects with a
``name``; bindings are counted so that binding twice and unbinding once leaves one.
"""
from __future__ import annotations

from typing import Any

from .errors import PreconditionFailed
from .topic_trie import TopicTrie

EXCHANGE_TYPES = ("direct", "fanout", "topic", "headers")


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


class Binding:
    __slots__ = ("source", "destination", "routing_key", "arguments")

    def __init__(self, source: "Exchange", destination: Any, routing_key: str,
                 arguments: dict | None):
        self.source = source
        self.destination = destination
        self.routing_key = routing_key
        self.arguments = arguments or {}

    def key(self) -> tuple:
        return (id(self.destination), self.routing_key, _freeze(self.arguments))


class Exchange:
    kind = "direct"
    #: a binding's destination is an exchange or a queue (Queue and Stream say False)
    is_exchange = True

    def __init__(self, name: str, *, durable: bool = True, auto_delete: bool = False,
                 internal: bool = False, arguments: dict | None = None):
        self.name = name
        self.durable = durable
        self.auto_delete = auto_delete
        self.internal = internal
        self.arguments = arguments or {}
        self.bindings: dict[tuple, Binding] = {}
        self.alternate_exchange: str | None = self.arguments.get("alternate-exchange")

    def bind(self, destination: Any, routing_key: str, arguments: dict | None) -> bool:
        self.validate_binding(arguments or {})
        binding = Binding(self, destination, routing_key, arguments)
        key = binding.key()
        if key in self.bindings:
            return False
        self.bindings[key] = binding
        self._index_add(binding)
        return True

    def unbind(self, destination: Any, routing_key: str, arguments: dict | None) -> bool:
        binding = self.bindings.pop(Binding(self, destination, routing_key, arguments).key(), None)
        if binding is None:
            return False
        self._index_remove(binding)
        return True

    def unbind_all(self, destination: Any) -> int:
        gone = [b for b in self.bindings.values() if b.destination is destination]
        for binding in gone:
            del self.bindings[binding.key()]
            self._index_remove(binding)
        return len(gone)

    def validate_binding(self, arguments: dict) -> None:
        """Raise PreconditionFailed for binding arguments this type cannot use."""

    # Routing index, per type ------------------------------------------------------------------
    def _index_add(self, binding: Binding) -> None:
        raise NotImplementedError

    def _index_remove(self, binding: Binding) -> None:
        raise NotImplementedError

    def route(self, routing_key: str, headers: dict | None) -> Any:
        """Destinations for this key: an iterable of queues and exchanges (may repeat)."""
        raise NotImplementedError


class _CountedIndex:
    """key -> {destination: count}: shared by direct (exact keys) bookkeeping."""

    def __init__(self) -> None:
        self.by_key: dict[str, dict[Any, int]] = {}

    def add(self, key: str, dest: Any) -> None:
        slot = self.by_key.setdefault(key, {})
        slot[dest] = slot.get(dest, 0) + 1

    def remove(self, key: str, dest: Any) -> None:
        slot = self.by_key.get(key)
        if slot is None or dest not in slot:
            return
        slot[dest] -= 1
        if slot[dest] == 0:
            del slot[dest]
            if not slot:
                del self.by_key[key]


class DirectExchange(Exchange):
    kind = "direct"

    def __init__(self, name: str, **kw: Any):
        super().__init__(name, **kw)
        self._index = _CountedIndex()

    def _index_add(self, binding: Binding) -> None:
        self._index.add(binding.routing_key, binding.destination)

    def _index_remove(self, binding: Binding) -> None:
        self._index.remove(binding.routing_key, binding.destination)

    def route(self, routing_key: str, headers: dict | None) -> Any:
        return self._index.by_key.get(routing_key, ())


class FanoutExchange(Exchange):
    kind = "fanout"

    def __init__(self, name: str, **kw: Any):
        super().__init__(name, **kw)
        self._index = _CountedIndex()

    def _index_add(self, binding: Binding) -> None:
        self._index.add("", binding.destination)

    def _index_remove(self, binding: Binding) -> None:
        self._index.remove("", binding.destination)

    def route(self, routing_key: str, headers: dict | None) -> Any:
        return self._index.by_key.get("", ())


class TopicExchange(Exchange):
    kind = "topic"

    def __init__(self, name: str, **kw: Any):
        super().__init__(name, **kw)
        self.trie: TopicTrie = TopicTrie()

    def _index_add(self, binding: Binding) -> None:
        self.trie.add(binding.routing_key, binding.destination)

    def _index_remove(self, binding: Binding) -> None:
        self.trie.remove(binding.routing_key, binding.destination)

    def route(self, routing_key: str, headers: dict | None) -> Any:
        return self.trie.match(routing_key)


class HeadersExchange(Exchange):
    """RabbitMQ's headers exchange: ``x-match`` = all (default) | any | all-with-x | any-with-x.
    Binding arguments whose names start with ``x-`` are ignored unless ``-with-x`` is given."""
    kind = "headers"

    def validate_binding(self, arguments: dict) -> None:
        mode = arguments.get("x-match", "all")
        if mode not in ("all", "any", "all-with-x", "any-with-x"):
            raise PreconditionFailed(f"invalid x-match field value {mode!r}; expected one of "
                                     "all, any, all-with-x, any-with-x")

    def _index_add(self, binding: Binding) -> None:
        pass

    def _index_remove(self, binding: Binding) -> None:
        pass

    def route(self, routing_key: str, headers: dict | None) -> Any:
        headers = headers or {}
        return [b.destination for b in self.bindings.values() if headers_match(b.arguments, headers)]


def headers_match(arguments: dict, headers: dict) -> bool:
    mode = arguments.get("x-match", "all")
    with_x = mode.endswith("-with-x")
    wanted = [(k, v) for k, v in arguments.items()
              if k != "x-match" and (with_x or not k.startswith("x-"))]
    if mode.startswith("any"):
        return any(_header_ok(headers, k, v) for k, v in wanted)
    return all(_header_ok(headers, k, v) for k, v in wanted)


def _header_ok(headers: dict, key: str, value: Any) -> bool:
    if key not in headers:
        return False
    # A binding argument of type void (None) matches on presence alone.
    return value is None or headers[key] == value


class DefaultExchange(Exchange):
    """The nameless direct exchange: every queue is bound to it by its own name, implicitly."""
    kind = "direct"

    def __init__(self, queues: dict):
        super().__init__("", durable=True)
        self._queues = queues

    def bind(self, destination: Any, routing_key: str, arguments: dict | None) -> bool:
        raise AssertionError("the default exchange takes no explicit bindings")

    def route(self, routing_key: str, headers: dict | None) -> Any:
        queue = self._queues.get(routing_key)
        return (queue,) if queue is not None else ()


def make_exchange(name: str, kind: str, **kw: Any) -> Exchange:
    cls = {"direct": DirectExchange, "fanout": FanoutExchange, "topic": TopicExchange,
           "headers": HeadersExchange}[kind]
    return cls(name, **kw)
