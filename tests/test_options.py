"""tokenstorm's options: one declaration each (RunOptions), the same checks from the command line,
LOCUST_* variables and the web UI's start form (strings, '' for "not given")."""

from __future__ import annotations

import argparse

import configargparse
import pytest

from tokenstorm.loadgen.options import OptionError, RunOptions, Settings, add_arguments


def parser() -> configargparse.ArgumentParser:
    p = configargparse.ArgumentParser()  # what Locust's parser is built on (no gevent patching here)
    add_arguments(p)
    return p


def test_every_option_is_registered_with_its_default_and_help():
    actions = {a.dest: a for a in parser()._actions}
    for name, field in RunOptions.model_fields.items():
        assert name in actions, name
        assert actions[name].default == field.default, name
        hidden = field.json_schema_extra.get("hidden")
        assert (actions[name].help == argparse.SUPPRESS) if hidden else actions[name].help.startswith(field.description)
    assert actions["header"].is_secret and not actions["master_lost_after"].include_in_web_ui


def test_command_line_values_are_typed_and_environment_variables_count(monkeypatch):
    monkeypatch.setenv("LOCUST_MAX_TOKENS", "64")
    options = parser().parse_args(["--total-requests", "7", "--temperature", "0.5", "--header", "X-A: 1"])
    assert (options.total_requests, options.max_tokens, options.temperature) == (7, 64, 0.5)
    assert RunOptions.read(options).header == ["X-A: 1"]


def test_start_form_strings_get_their_types_and_empty_fields_their_defaults(tmp_path):
    options = parser().parse_args([])
    options.total_requests, options.slo_ttft_ms, options.temperature, options.header = "12", "500", "", ""
    settings = Settings.build(options, "http://127.0.0.1:9/v1", tmp_path)
    assert (options.total_requests, options.slo_ttft_ms, options.temperature, options.header) == (12, 500.0, None, [])
    assert settings.total_requests == 12 and settings.slos == {"ttft_ms": 500.0}
    assert settings.path == "/v1/chat/completions" and settings.extra_headers == []


@pytest.mark.parametrize(("name", "value", "message"), [
    ("total_requests", "-1", "--total-requests: must be 0 or more, got -1"),
    ("arrival_seed", "1.5", "--arrival-seed: '1.5' is not a whole number"),
    ("temperature", "hot", "--temperature: 'hot' is not a number"),
    ("api", "grpc", "--api: 'grpc' is not one of 'chat', 'completions' or 'responses'"),
    ("header", "NoColon", "--header: 'NoColon' is not 'Name: value'"),
])
def test_a_bad_start_form_value_is_one_line_naming_the_option(tmp_path, name, value, message):
    options = parser().parse_args([])
    setattr(options, name, value)
    with pytest.raises(OptionError) as caught:
        Settings.build(options, "http://127.0.0.1:9", tmp_path)
    assert str(caught.value) == message
