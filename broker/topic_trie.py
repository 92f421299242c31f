"""Topic routing: a trie of binding-key words with ``*`` and ``#`` nodes and a result cache.

Model: nats-server ``server/sublist.go``: match cost depends on the key's length and the trie's
shape, never on the number of bindings; results are cached per routing key and the cache is dropped
whenever the bindings change (a generation bump), so steady-state publishing is one dict lookup.
AMQP rules: words are separated by ``.``, ``*`` matches exactly one word, ``#`` zero or more.

Matching cannot be made slow by a binding. Trying every split of the key at every ``#`` costs
exponential time in the number of ``#`` (``#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.z`` against a
40-word key: seconds per publish). Instead a match visits each trie node at most once, carrying
the set of word positions at which the key has been matched up to that node: the
(node, word index) pairs of the naive search, memoised, as one integer bitmask per node
(bit i: words[:i] matched). Adjacent ``#`` are also collapsed at bind time (``#.#`` = ``#``).
"""
from __future__ import annotations

from itertools import accumulate
from operator import or_
from typing import Generic, Hashable, Iterable, TypeVar

T = TypeVar("T", bound=Hashable)

_CACHE_LIMIT = 4096


def _words(pattern: str) -> list[str]:
    """A binding key's words, with each run of adjacent ``#`` collapsed into one."""
    words: list[str] = []
    for word in pattern.split("."):
        if word != "#" or not words or words[-1] != "#":
            words.append(word)
    return words


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
        for word in _words(pattern):
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
        for word in _words(pattern):
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
        self._walk(routing_key.split("."), out)
        result = tuple(out)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[routing_key] = result
        return result

    def steps(self, routing_key: str) -> int:
        """How many trie nodes a match of ``routing_key`` visits (uncached): never more than
        the trie has nodes, whatever the bindings. For tests and benchmarks."""
        return self._walk(routing_key.split("."), {})

    def _walk(self, words: list[str], out: dict) -> int:
        """Add to ``out`` the values of every binding that matches ``words``; return the
        number of nodes visited. ``at`` is the bitmask of positions i such that ``words[:i]``
        matches the path from the root to ``node``; the trie is a tree, so each node is
        reached from its one parent, once."""
        n = len(words)
        end = 1 << n            # bit n: the whole key matched
        inside = end - 1        # bits 0..n-1: positions that still have a word to match
        positions: dict[str, int] = {}  # word -> bitmask of the positions holding it
        for i, word in enumerate(words):
            positions[word] = positions.get(word, 0) | (1 << i)
        steps = 0
        stack = [(self._root, 1)]
        while stack:
            node, at = stack.pop()
            steps += 1
            if node.hash is not None:
                # '#' swallows zero or more words: from the first position it is reached at,
                # it stands at every later one.
                lowest = at & -at
                stack.append((node.hash, (end | inside) & ~(lowest - 1)))
            if at & end:
                for value in node.values:
                    out[value] = None
            live = at & inside
            if not live:
                continue
            if node.star is not None:
                stack.append((node.star, live << 1))
            children = node.children
            if not children:
                continue
            if not live & (live - 1):
                # One position (no '#' above): the usual case, one dict lookup.
                i = live.bit_length() - 1
                child = children.get(words[i])
                if child is not None:
                    stack.append((child, live << 1))
            elif len(children) < len(positions):
                for word, child in children.items():
                    hits = live & positions.get(word, 0)
                    if hits:
                        stack.append((child, hits << 1))
            else:
                for word, mask in positions.items():
                    hits = live & mask
                    if hits:
                        child = children.get(word)
                        if child is not None:
                            stack.append((child, hits << 1))
        return steps

    def node_count(self) -> int:
        count, stack = 0, [self._root]
        while stack:
            node = stack.pop()
            count += 1
            stack.extend(node.children.values())
            stack.extend(n for n in (node.star, node.hash) if n is not None)
        return count

    def values(self) -> Iterable[T]:
        stack = [self._root]
        while stack:
            node = stack.pop()
            yield from node.values
            stack.extend(node.children.values())
            stack.extend(n for n in (node.star, node.hash) if n is not None)


def topic_matches(pattern: str, routing_key: str) -> bool:
    """A plain matcher, independent of the trie (tests use it as the reference): one pass per
    pattern word over ``reach``, where ``reach[j]`` says the pattern words so far can match the
    first j key words."""
    key = routing_key.split(".")
    reach = [True] + [False] * len(key)
    for word in pattern.split("."):
        if word == "#":
            reach = list(accumulate(reach, or_))  # zero or more words: any earlier j will do
        else:
            reach = [False] + [reach[j] and (word == "*" or word == key[j])
                               for j in range(len(key))]
    return reach[len(key)]
