"""Output constraints for llama.cpp: JSON schema -> GBNF grammar -> compiled grammar sampler.

Done once per request, on a worker thread (never on the event loop or the decode thread), and
checked for cost before any decoding: the grammar sampler runs on the decode thread for every
token, so a grammar that is slow to apply slows every stream of the batch.

Measured on the bundled model (49,152 tokens; 2-core EPYC): masking the whole vocabulary costs
about 7 ms for any-JSON, 14 ms for a 10-value enum, 94 ms for 100 values and 0.9 s for 1,000
(cost grows with the alternatives open at once). The scheduler masks the whole vocabulary only
when the model's own choice is rejected (checking one token is thousands of times cheaper), so
what is refused is a grammar whose full mask is so slow that one rejection stalls the batch.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from labs_api.engines.chat.base import OutputConstraint
from labs_api.engines.errors import InvalidRequest

#: Largest count a JSON schema may ask for (minLength, maxLength, minItems, maxItems, a pattern's
#: {m,n}). llama-cpp-python's converter writes a count out as that many nested rules: 10^9 takes
#: gigabytes (the process is killed), 30,000 overflows llama.cpp's grammar parser (a crash).
MAX_SCHEMA_COUNT = 1000
#: Most properties plus enum/const values plus anyOf/oneOf alternatives in one schema. The
#: converter's time grows faster than linearly with properties (100: 26 ms, 500: 0.8 s), and
#: with the length of their names (256 properties of 800 characters: 2.9 s).
MAX_SCHEMA_BRANCHES = 128
MAX_SCHEMA_CHARS = 16_000  # the schema as compact JSON
MAX_GRAMMAR_CHARS = 200_000
#: Most CPU time one full mask of the vocabulary may take (measured once per request on the
#: grammar's start, where an enum or a set of properties has every alternative open).
MAX_MASK_SECONDS = 0.030
#: Further measurements of a schema's mask when the first is over the limit but within 3x.
MASK_REMEASURES = 2
_COUNT_KEYS = ("minLength", "maxLength", "minItems", "maxItems")
_QUANTIFIER = re.compile(r"\{\s*(\d*)\s*(?:,\s*(\d*)\s*)?\}")


class GrammarModel(Protocol):
    n_vocab: int

    def compile_grammar(self, grammar: str) -> Any: ...
    def clone_sampler(self, sampler: Any) -> Any: ...
    def free_sampler(self, sampler: Any) -> None: ...
    def allowed_by(self, grammar: Any, tokens: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class SchemaSize:
    largest_count: int = 0
    branches: int = 0


def schema_size(schema: object) -> SchemaSize:
    """The largest repetition count anywhere in ``schema``, and its number of branches."""
    if isinstance(schema, list):
        parts = [schema_size(item) for item in schema]
        return SchemaSize(max([0, *(p.largest_count for p in parts)]),
                          sum(p.branches for p in parts))
    if not isinstance(schema, dict):
        return SchemaSize()
    counts = [v for k, v in schema.items() if k in _COUNT_KEYS and isinstance(v, int)]
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        counts += [int(n) for bounds in _QUANTIFIER.findall(pattern) for n in bounds if n]
    branches = 0
    for key in ("properties", "enum", "anyOf", "oneOf", "patternProperties", "$defs",
                "definitions"):
        value = schema.get(key)
        if isinstance(value, (dict, list)):
            branches += len(value)
    parts = [schema_size(value) for value in schema.values()]
    return SchemaSize(max([0, *counts, *(p.largest_count for p in parts)]),
                      branches + sum(p.branches for p in parts))


def largest_count(schema: object) -> int:
    return schema_size(schema).largest_count


#: llama-cpp-python's schema converter lets a JSON string hold raw control characters
#: (``char ::= [^"\\] | ...``), so a constrained answer could be invalid JSON (a raw newline
#: inside a string); JSON allows them only escaped.
_LOOSE_CHAR = re.compile(r'^(char ::= )\[\^"\\\\\]', re.MULTILINE)


def strict_json_strings(grammar: str) -> str:
    """The grammar with its string characters limited to what JSON allows unescaped."""
    return _LOOSE_CHAR.sub(lambda m: m.group(1) + r'[^"\\\x7F\x00-\x1F]', grammar)


def grammar_for(constraint: OutputConstraint | None) -> str | None:
    """The GBNF grammar that makes llama.cpp's output valid JSON (against a schema, if any)."""
    if constraint is None:
        return None
    from llama_cpp import llama_grammar

    if constraint.kind == "json_object":
        return llama_grammar.JSON_GBNF
    try:
        chars = len(json.dumps(constraint.schema or {}, separators=(",", ":")))
        if chars > MAX_SCHEMA_CHARS:
            raise ValueError(f"it is {chars} characters as JSON; at most {MAX_SCHEMA_CHARS}")
        size = schema_size(constraint.schema)
        if size.largest_count > MAX_SCHEMA_COUNT:
            raise ValueError(f"a repetition count of {size.largest_count} (minLength, "
                             f"maxLength, minItems, maxItems or a pattern's {{m,n}}); at most "
                             f"{MAX_SCHEMA_COUNT}")
        if size.branches > MAX_SCHEMA_BRANCHES:
            raise ValueError(f"{size.branches} properties, enum values and alternatives in "
                             f"all; at most {MAX_SCHEMA_BRANCHES}")
        grammar = strict_json_strings(
            llama_grammar.json_schema_to_gbnf(json.dumps(constraint.schema or {})))
        if len(grammar) > MAX_GRAMMAR_CHARS:
            raise ValueError(f"its grammar is {len(grammar)} characters; at most "
                             f"{MAX_GRAMMAR_CHARS}")
        return grammar
    except RecursionError:
        raise invalid(constraint, "it is nested too deeply") from None
    except Exception as exc:  # the converter raises plain exceptions for what it cannot do
        raise invalid(constraint, str(exc)) from None


def invalid(constraint: OutputConstraint, why: str) -> InvalidRequest:
    return InvalidRequest(f"Unsupported JSON schema in {constraint.param}: {why}",
                          param=constraint.param, code="invalid_schema")


def compile_constraint(model: GrammarModel, constraint: OutputConstraint,
                       copies: int) -> list[Any]:
    """``copies`` grammar samplers for ``constraint`` (one per generation), converted and
    compiled once. Raises InvalidRequest (400) for a schema that cannot be compiled, that is
    too costly to apply, or that allows no output at all. Blocking: call it off the loop."""
    grammar = grammar_for(constraint)
    assert grammar is not None
    try:
        sampler = model.compile_grammar(grammar)
    except ValueError as exc:
        raise invalid(constraint, str(exc)) from None
    samplers = [sampler]
    try:
        allowed, cost = _full_mask(model, sampler)
        if not allowed.any():
            raise invalid(constraint, "no output can satisfy it")
        # Any-JSON is always served: its mask is fixed and cheap (about 7 ms), and a loaded
        # machine must not turn it into a refusal. A schema's cost is measured again when it is
        # near the limit, since a busy (virtual) CPU can inflate one measurement severalfold.
        if constraint.kind == "json_object":
            cost = 0.0
        elif MAX_MASK_SECONDS < cost < 3 * MAX_MASK_SECONDS:
            for _ in range(MASK_REMEASURES):
                cost = min(cost, _full_mask(model, sampler)[1])
                if cost <= MAX_MASK_SECONDS:
                    break
        if cost > MAX_MASK_SECONDS:
            raise invalid(constraint, f"it is too costly to apply while generating (one "
                          f"step takes {cost * 1000:.0f} ms of CPU; at most "
                          f"{MAX_MASK_SECONDS * 1000:.0f} ms): use fewer enum values or "
                          f"alternatives")
        samplers += [model.clone_sampler(sampler) for _ in range(copies - 1)]
    except BaseException:
        for made in samplers:
            model.free_sampler(made)
        raise
    return samplers


def _full_mask(model: GrammarModel, sampler: Any) -> tuple[np.ndarray, float]:
    """Which tokens the grammar allows first, and the CPU seconds masking them took (masking
    does not advance the grammar: the sampler is still at its start after)."""
    started = time.thread_time()
    allowed = model.allowed_by(sampler, np.arange(model.n_vocab, dtype=np.int32))
    return allowed, time.thread_time() - started
