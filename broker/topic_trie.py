"""Topic routing: a trie of binding-key words with ``*`` and ``#`` nodes and a result cache.

Model: nats-server ``server/sublist.go``: match cost depends on the key's length and the trie's
shape, never on the number of bindings; results are cached per routing key and the cache is dropped
whenever the bindings change (a generation bump), so steady-state publishing is one dict lookup.
AMQP rules: words are separated by ``.``, ``*`` matches exactly one word, ``#`` zero or more.
"""
from __future__ import annotations

from typing import Generic, Hashable, Iterable, TypeVar

T = TypeVar("T", bound=Hashable)

_CACHE_LIMIT = 4096


class _Node:
    __slots__ = ("children", "star", "hash", "values")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.star: _Node | None = None
        self.hash: _Node | None = None
        # value -> number of bindings with this exact key that lead to it
        self.values: dict = {}

    def empty(self) -> bool:
        return not (self.children or self.star or self.hash or self.values)


class TopicTrie(Generic[T]):
    def __init__(self) -> None:
        self._root = _Node()
        self._cache: dict[str, tuple[T, ...]] = {}
        self.generation = 0

    def add(self, pattern: str, value: T) -> None:
        node = self._root
        for word in pattern.split("."):
            if word == "*":
                node.star = node.star or _Node()
                node = node.star
            elif word == "#":
                node.hash = node.hash or _Node()
                node = node.hash
            else:
                node = node.children.setdefault(word, _Node())
        node.values[value] = node.values.get(value, 0) + 1
        self._changed()

    def remove(self, pattern: str, value: T) -> bool:
        path: list[tuple[_Node, str]] = []
        node = self._root
        for word in pattern.split("."):
            nxt = node.star if word == "*" else node.hash if word == "#" else node.children.get(word)
            if nxt is None:
                return False
            path.append((node, word))
            node = nxt
        count = node.values.get(value)
        if not count:
            return False
        if count > 1:
            node.values[value] = count - 1
        else:
            del node.values[value]
        # Prune empty nodes bottom-up so a churn of bindings does not leave a growing skeleton.
        for parent, word in reversed(path):
            child = parent.star if word == "*" else parent.hash if word == "#" else parent.children[word]
            if not child.empty():
                break
            if word == "*":
                parent.star = None
            elif word == "#":
                parent.hash = None
            else:
                del parent.children[word]
        self._changed()
        return True

    def _changed(self) -> None:
        self.generation += 1
        self._cache.clear()

    def match(self, routing_key: str) -> tuple[T, ...]:
        hit = self._cache.get(routing_key)
        if hit is not None:
            return hit
        out: dict[T, None] = {}
        self._match(self._root, routing_key.split("."), 0, out)
        result = tuple(out)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[routing_key] = result
        return result

    def _match(self, node: _Node, words: list[str], i: int, out: dict) -> None:
        hash_node = node.hash
        if hash_node is not None:
            # '#' swallows zero or more words: continue after it from every later position.
            for j in range(i, len(words) + 1):
                self._match(hash_node, words, j, out)
        if i == len(words):
            for value in node.values:
                out[value] = None
            return
        child = node.children.get(words[i])
        if child is not None:
            self._match(child, words, i + 1, out)
        if node.star is not None:
            self._match(node.star, words, i + 1, out)

    def values(self) -> Iterable[T]:
        stack = [self._root]
        while stack:
            node = stack.pop()
            yield from node.values
            stack.extend(node.children.values())
            stack.extend(n for n in (node.star, node.hash) if n is not None)


def topic_matches(pattern: str, routing_key: str) -> bool:
    """The naive matcher (used by tests as the reference, and for one-off checks)."""
    pw, kw = pattern.split("."), routing_key.split(".")

    def go(i: int, j: int) -> bool:
        if i == len(pw):
            return j == len(kw)
        if pw[i] == "#":
            return any(go(i + 1, k) for k in range(j, len(kw) + 1))
        if j == len(kw):
            return False
        return (pw[i] == "*" or pw[i] == kw[j]) and go(i + 1, j + 1)

    return go(0, 0)
