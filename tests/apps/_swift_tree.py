"""Parse-tree helpers for the iOS checks (tests/apps/test_ios_*.py): the Swift parser, calls and their arguments,
and the folders the checks read. Builds on test_ios_sources.py's walkers."""

from __future__ import annotations

import pytest

from test_ios_sources import IOS, SOURCES, _call_name, _function, _nodes, switch_cases

APP_SOURCES = IOS / "App" / "Sources"
ET_SOURCES = IOS / "Sources" / "MiniVLMExecuTorch"
CET = IOS / "Sources" / "CMiniVLMExecuTorch"
REPLAY_TEST = IOS / "Tests" / "MiniVLMTests" / "BuildReplayTests.swift"

__all__ = ["APP_SOURCES", "CET", "ET_SOURCES", "IOS", "REPLAY_TEST", "SOURCES", "_arguments", "_call_name", "_calls",
           "_function", "_function_in", "_identifiers", "_nodes", "make_parser", "switch_cases"]


def make_parser():
    """tree-sitter's Swift parser, or a skip naming the dev extra."""
    ts = pytest.importorskip("tree_sitter", reason="tree-sitter is in the dev extra: pip install -e '.[dev]'")
    tss = pytest.importorskip("tree_sitter_swift", reason="tree-sitter-swift is in the dev extra")
    return ts.Parser(ts.Language(tss.language()))


def _calls(node, name: str):
    """Every call of `name` under `node` (a plain, member or implicit-member call: f(, x.f(, .f()."""
    for n in _nodes(node):
        if n.type == "call_expression" and n.named_children and n.named_children[-1].type == "call_suffix":
            callee = n.named_children[0]
            if callee.type == "prefix_expression":  # .f(...)
                called = callee.named_children[-1].text.decode()
            elif callee.type in ("simple_identifier", "navigation_expression"):
                called = _call_name(n)
            else:
                continue
            if called == name:
                yield n


def _arguments(call) -> dict[str | None, str]:
    """{label (None: unlabelled, last wins): argument source} of a call."""
    args: dict[str | None, str] = {}
    for suffix in call.named_children[-1].named_children:
        if suffix.type != "value_arguments":
            continue
        for arg in suffix.named_children:
            label = next((c.text.decode() for c in arg.named_children if c.type == "value_argument_label"), None)
            args[label] = arg.named_children[-1].text.decode()
    return args


def _function_in(parser, source: bytes, name: str):
    return _function(parser.parse(source).root_node, name)


def _identifiers(node) -> set[str]:
    return {n.text.decode() for n in _nodes(node) if n.type in ("simple_identifier", "type_identifier")}
