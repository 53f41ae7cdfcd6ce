"""The JSON-schema grammar lets strings hold only what JSON allows unescaped."""

import pytest

from labs_api.engines.chat.base import OutputConstraint
from labs_api.engines.chat.llama_cpp_engine import grammar_for


@pytest.mark.parametrize("string", [{"type": "string"}, {"type": "string", "maxLength": 5}])
def test_schema_strings_exclude_raw_control_characters(string):
    grammar = grammar_for(OutputConstraint("json_schema", {
        "type": "object", "properties": {"greeting": string}, "required": ["greeting"]}))
    [char_rule] = [line for line in grammar.splitlines() if line.startswith("char ::=")]
    assert char_rule.startswith(r'char ::= [^"\\\x7F\x00-\x1F] | "\\"'), char_rule
