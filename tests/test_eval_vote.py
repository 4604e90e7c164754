"""The per-field vote is exact on planted replies."""

from __future__ import annotations

import json

from ftassist.evaluation.vote import vote, voted_reply


def test_each_key_takes_its_own_majority():
    replies = [
        '{"persons": ["Obama"], "locations": [], "organizations": ["NASA"]}',
        'Sure! {"persons": ["Barack Obama"], "locations": [], "organizations": ["NASA"]}',  # filler: its object votes
        '{"persons": ["Barack Obama"], "locations": ["Paris"]}',  # organizations left out: a vote for "absent"
        "I cannot answer that.",  # no JSON: no vote
        '{"persons": ["Barack Obama"], "locations": ["Paris"], "organizations": []}',
    ]
    keys = ["persons", "locations", "organizations"]
    # persons 3 x "Barack Obama" vs 1; locations 2 x [] vs 2 x ["Paris"]: a tie, the first seen wins; organizations
    # 2 x ["NASA"], 1 x absent, 1 x []
    assert vote(replies, keys) == {"persons": ["Barack Obama"], "locations": [], "organizations": ["NASA"]}
    assert vote(replies[2:4], keys) == {"persons": ["Barack Obama"], "locations": ["Paris"]}  # absent wins: key left out
    assert vote(["nothing", "at all"], keys) is None
    # key order of the values does not split the vote
    assert vote(['{"a": {"x": 1, "y": 2}}', '{"a": {"y": 2, "x": 1}}', '{"a": {"x": 9}}'], ["a"]) == {"a": {"x": 1, "y": 2}}


def test_voted_reply_keeps_the_reference_keys_and_falls_back_to_the_first_reply():
    reference = {"keyword": "flood", "real_disaster": True}
    replies = ['{"keyword": "flood", "real_disaster": false}', '{"keyword": "fire", "real_disaster": true}',
               '{"keyword": "flood", "real_disaster": true, "extra": 1}']
    assert json.loads(voted_reply(replies, reference)) == {"keyword": "flood", "real_disaster": True}
    assert voted_reply(["no", "json"], reference) == "no"
