"""Topic matching against bindings built to be slow: many ``#``, long keys.

The trie visits each node at most once per match (``TopicTrie.steps``), so the checks here are
on that count and on the routing result, plus a generous pytest timeout: never a speed
assertion. The reference is ``topic_matches``, a separate algorithm."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from manifold.broker.topic_trie import TopicTrie, topic_matches

KEY_WORDS = st.sampled_from(["a", "b", "z", ""])
PATTERN_WORDS = st.sampled_from(["a", "b", "z", "*", "#", "#", "#"])
AMQP_KEY_MAX = 255  # a routing key is a short string [AMQP 0-9-1 4.2.5.3]


def _key(words: list[str]) -> str:
    return ".".join(words)[:AMQP_KEY_MAX]


@settings(max_examples=200, deadline=None)
@pytest.mark.timeout(300)  # a blow-up never ends; a loaded machine is only slow
@given(patterns=st.lists(st.lists(PATTERN_WORDS, min_size=1, max_size=80).map(".".join),
                         min_size=1, max_size=6),
       keys=st.lists(st.lists(KEY_WORDS, min_size=1, max_size=128).map(_key), min_size=1,
                     max_size=4))
def test_hash_heavy_patterns_route_like_the_reference_visiting_each_node_once(patterns, keys):
    trie: TopicTrie = TopicTrie()
    for i, pattern in enumerate(patterns):
        trie.add(pattern, i)
    nodes = trie.node_count()
    for key in keys:
        expected = {i for i, pattern in enumerate(patterns) if topic_matches(pattern, key)}
        assert set(trie.match(key)) == expected, key
        assert trie.steps(key) <= nodes


@pytest.mark.timeout(120)  # a blow-up never ends; a loaded machine is only slow
def test_the_issue_binding_against_a_40_word_key():
    trie: TopicTrie = TopicTrie()
    pattern = ".".join(["#"] * 19 + ["z"])
    trie.add(pattern, "q")
    # adjacent '#' collapse at bind time: root, '#', 'z'
    assert trie.node_count() == 3
    miss = ".".join(["a"] * 40)
    hit = ".".join(["a"] * 39 + ["z"])
    assert trie.match(miss) == ()
    assert trie.match(hit) == ("q",)
    assert trie.steps(miss) <= 3


@pytest.mark.timeout(120)  # a blow-up never ends; a loaded machine is only slow
def test_alternating_hash_and_word_against_a_255_byte_key():
    # '#.a.#.a. ... .#.b' cannot be collapsed: 64 '#' separated by words. A naive search tries
    # every split of the key at every '#'.
    trie: TopicTrie = TopicTrie()
    pattern = ".".join(["#", "a"] * 63 + ["#", "b"])
    trie.add(pattern, "q")
    nodes = trie.node_count()
    assert nodes == 129
    miss = ".".join(["a"] * 128)[:AMQP_KEY_MAX]
    hit = ".".join(["a"] * 127 + ["b"])
    assert len(hit) == AMQP_KEY_MAX and len(miss.split(".")) == 128
    assert trie.match(miss) == ()
    assert trie.match(hit) == ("q",)
    assert topic_matches(pattern, hit) and not topic_matches(pattern, miss)
    assert trie.steps(miss) <= nodes


def test_64_word_and_255_byte_keys_route_exactly():
    trie: TopicTrie = TopicTrie()
    words = [f"w{i}" for i in range(64)]
    exact = ".".join(words)
    trie.add(exact, "exact")
    trie.add(".".join(["*"] * 64), "stars64")
    trie.add(".".join(["*"] * 63), "stars63")
    trie.add("w0.#.w63", "ends")
    trie.add(".".join(words[:32]) + ".#", "prefix")
    assert set(trie.match(exact)) == {"exact", "stars64", "ends", "prefix"}
    longest = ".".join(["x"] * 128)  # 255 bytes, 128 words
    trie.add(".".join(["x"] * 127 + ["*"]), "x128")
    trie.add("#.x.x", "tail")
    assert len(longest) == AMQP_KEY_MAX
    assert set(trie.match(longest)) == {"x128", "tail"}


def test_collapsed_bindings_still_remove_one_by_one():
    trie: TopicTrie = TopicTrie()
    trie.add("a.#.#.b", "q")
    trie.add("a.#.b", "q")
    assert trie.match("a.b") == ("q",)
    assert trie.remove("a.#.#.#.b", "q")  # the same binding key once collapsed
    assert trie.match("a.x.y.b") == ("q",)
    assert trie.remove("a.#.b", "q")
    assert trie.match("a.b") == ()
    assert trie.node_count() == 1
    assert not trie.remove("a.#.b", "q")
