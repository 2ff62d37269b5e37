"""Validation of Messages, count_tokens and batch-create bodies, with the API's `<json.path>: <reason>` messages.

Returns the first problem as a message (the caller answers 400 `invalid_request_error`);
an unknown model is reported separately because it is a 404. This module must not know
about HTTP, timing or the answer; it only judges the shape of a body.
"""

from __future__ import annotations

import re
from typing import Any, NoReturn

from harness.simulator.promptcache import BreakpointError, find_breakpoints

__all__ = [
    "BATCH_HEADERS_KEY",
    "MAX_BATCH_REQUESTS",
    "MIN_THINKING_BUDGET",
    "check_batch_create",
    "check_count_tokens",
    "check_messages",
    "model_of",
    "thinking_on",
]

_MESSAGES_FIELDS = {
    "model", "max_tokens", "messages", "system", "stop_sequences", "stream", "metadata", "tools",
    "tool_choice", "service_tier", "thinking", "cache_control", "output_config", "temperature",
    "top_p", "top_k", "container", "diagnostics", "inference_geo", "speed",
}  # fmt: skip
_COUNT_FIELDS = {
    "model", "messages", "system", "tools", "tool_choice", "thinking", "output_config",
    "cache_control", "speed",
}  # fmt: skip
_ROLES = {"user", "assistant", "system"}
_TOOL_CHOICES = {"auto", "any", "tool", "none"}
_THINKING = {"enabled", "disabled", "adaptive"}
_EFFORTS = {"low", "medium", "high", "xhigh", "max"}
_DISPLAYS = {"summarized", "omitted"}
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
MAX_MESSAGES = 100_000
MIN_THINKING_BUDGET = 1024
MAX_BATCH_REQUESTS = 100_000
# The simulator's one extension of the batch envelope: a request's harness headers
# (`x-harness-expected`, `x-harness-tags`: see `quality.py`), which a batch request cannot carry
# as HTTP headers. The real API refuses the key; the harness sends it to the simulator only.
BATCH_HEADERS_KEY = "x-harness-headers"
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

# Messages the real API sends for these (recorded in public bug reports), word for word.
MSG_BUDGET_NOT_BELOW_MAX = "`max_tokens` must be greater than `thinking.budget_tokens`."
MSG_THINKING_FORCED_TOOL = "Thinking may not be enabled when tool_choice forces tool use."
MSG_THINKING_TEMPERATURE = (
    "`temperature` may only be set to 1 when thinking is enabled or in adaptive mode. Please consult "
    "our documentation at https://platform.claude.com/docs/en/build-with-claude/extended-thinking"
)
MSG_THINKING_TOP_K = "`top_k` must be unset when thinking is enabled or in adaptive mode"
MSG_THINKING_TOP_P = (
    "`top_p` must be greater than or equal to 0.95 or unset when thinking is enabled or in adaptive mode"
)
MSG_TOOL_CHOICE_WITHOUT_TOOLS = "tool_choice may only be specified while providing tools."
MSG_DUPLICATE_TOOLS = "tools: Tool names must be unique."


class _Invalid(Exception):
    pass


def _fail(path: str, reason: str) -> NoReturn:
    raise _Invalid(f"{path}: {reason}")


def _refuse(message: str) -> NoReturn:
    """A failure whose message has no `<path>: ` prefix."""
    raise _Invalid(message)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def model_of(body: Any) -> str | None:
    """The `model` field when the body is an object with a string model, else None."""
    if isinstance(body, dict) and isinstance(body.get("model"), str):
        return body["model"]
    return None


def _cache_control(path: str, value: Any) -> None:
    if not isinstance(value, dict) or value.get("type") != "ephemeral":
        _fail(path, "Input should be an object with type 'ephemeral'")
    if "ttl" in value and value["ttl"] not in ("5m", "1h"):
        _fail(f"{path}.ttl", "Input should be '5m' or '1h'")


def _block(path: str, block: Any) -> None:
    if not isinstance(block, dict):
        _fail(path, "Input should be a valid dictionary")
    kind = block.get("type")
    if not isinstance(kind, str) or not kind:
        _fail(f"{path}.type", "Field required")
    if kind == "text" and not isinstance(block.get("text"), str):
        _fail(f"{path}.text", "Input should be a valid string")
    if "cache_control" in block and block["cache_control"] is not None:
        _cache_control(f"{path}.cache_control", block["cache_control"])


def _content(path: str, content: Any) -> None:
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        _fail(path, "Input should be a valid string or list of content blocks")
    for i, block in enumerate(content):
        _block(f"{path}.{i}", block)


def _messages(body: dict[str, Any]) -> None:
    messages = body.get("messages")
    if "messages" not in body:
        _fail("messages", "Field required")
    if not isinstance(messages, list):
        _fail("messages", "Input should be a valid list")
    if not messages:
        _fail("messages", "at least one message is required")
    if len(messages) > MAX_MESSAGES:
        _fail("messages", f"at most {MAX_MESSAGES} messages are allowed")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            _fail(f"messages.{i}", "Input should be a valid dictionary")
        extra = set(message) - {"role", "content"}
        if extra:
            _fail(f"messages.{i}.{sorted(extra)[0]}", "Extra inputs are not permitted")
        if message.get("role") not in _ROLES:
            _fail(f"messages.{i}.role", "Input should be 'user' or 'assistant'")
        if "content" not in message:
            _fail(f"messages.{i}.content", "Field required")
        _content(f"messages.{i}.content", message["content"])


def _common(body: dict[str, Any], allowed: set[str]) -> None:
    for name in body:
        if name not in allowed:
            _fail(name, "Extra inputs are not permitted")
    if "model" not in body:
        _fail("model", "Field required")
    if not isinstance(body["model"], str) or not body["model"]:
        _fail("model", "Input should be a valid string")
    _messages(body)
    if "system" in body:
        system = body["system"]
        if isinstance(system, list):
            for i, block in enumerate(system):
                _block(f"system.{i}", block)
                if block.get("type") != "text":
                    _fail(f"system.{i}.type", "Input should be 'text'")
        elif not isinstance(system, str):
            _fail("system", "Input should be a valid string or list of text blocks")
    names = _tools(body["tools"]) if "tools" in body else None
    if "tool_choice" in body:
        _tool_choice(body["tool_choice"], names)
    if "thinking" in body:
        _thinking(body["thinking"])
    if "output_config" in body:
        config = body["output_config"]
        if not isinstance(config, dict):
            _fail("output_config", "Input should be a valid dictionary")
        if "effort" in config and config["effort"] not in _EFFORTS:
            _fail("output_config.effort", "Input should be 'low', 'medium', 'high', 'xhigh' or 'max'")
        if "format" in config and not isinstance(config["format"], dict):
            _fail("output_config.format", "Input should be a valid dictionary")
    if "cache_control" in body and body["cache_control"] is not None:
        _cache_control("cache_control", body["cache_control"])


def _tools(tools: Any) -> set[str]:
    """Check the tool list; the names it offers."""
    if not isinstance(tools, list):
        _fail("tools", "Input should be a valid list")
    names: set[str] = set()
    duplicate = False
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            _fail(f"tools.{i}.name", "Field required")
        kind, name = tool.get("type"), tool["name"]
        if kind is None or kind == "custom":
            if not isinstance(tool.get("input_schema"), dict):
                _fail(f"tools.{i}.input_schema", "Field required")
            if not _TOOL_NAME.match(name):
                _fail(f"tools.{i}.custom.name", f"String should match pattern '{_TOOL_NAME.pattern}'")
        elif isinstance(kind, str) and kind.startswith("web_search_") and name != "web_search":
            _fail(f"tools.{i}.{kind}.name", "Input should be 'web_search'")
        duplicate = duplicate or name in names
        names.add(name)
    if duplicate:
        _refuse(MSG_DUPLICATE_TOOLS)
    return names


def _tool_choice(choice: Any, names: set[str] | None) -> None:
    if not isinstance(choice, dict) or choice.get("type") not in _TOOL_CHOICES:
        _fail("tool_choice.type", "Input should be 'auto', 'any', 'tool' or 'none'")
    kind = choice["type"]
    if kind == "tool" and not isinstance(choice.get("name"), str):
        _fail("tool_choice.name", "Field required")
    if kind != "none" and not names:
        _refuse(MSG_TOOL_CHOICE_WITHOUT_TOOLS)
    if kind == "tool" and names is not None and choice["name"] not in names:
        _fail("tool_choice.name", f"Tool '{choice['name']}' not found in tools")


def _thinking(thinking: Any) -> None:
    if not isinstance(thinking, dict) or thinking.get("type") not in _THINKING:
        _fail("thinking.type", "Input should be 'enabled', 'disabled' or 'adaptive'")
    kind = thinking["type"]
    if kind == "enabled":
        if "budget_tokens" not in thinking:
            _fail("thinking.enabled.budget_tokens", "Field required")
        budget = thinking["budget_tokens"]
        if not _is_int(budget):
            _fail("thinking.enabled.budget_tokens", "Input should be a valid integer")
        if budget < MIN_THINKING_BUDGET:
            _fail(
                "thinking.enabled.budget_tokens",
                f"Input should be greater than or equal to {MIN_THINKING_BUDGET}",
            )
    if thinking.get("display") is not None and thinking["display"] not in _DISPLAYS:
        _fail(f"thinking.{kind}.display", "Input should be 'summarized' or 'omitted'")


def thinking_on(body: dict[str, Any]) -> bool:
    """Whether a (valid) body turns thinking on: `enabled` or `adaptive`."""
    thinking = body.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")


def _thinking_compatible(body: dict[str, Any]) -> None:
    """What thinking forbids elsewhere in the body (checked after each field on its own)."""
    if not thinking_on(body):
        return
    thinking = body["thinking"]
    if thinking["type"] == "enabled" and thinking["budget_tokens"] >= body["max_tokens"]:
        _refuse(MSG_BUDGET_NOT_BELOW_MAX)
    if body.get("temperature") is not None and body["temperature"] != 1:
        _refuse(MSG_THINKING_TEMPERATURE)
    if body.get("top_p") is not None and body["top_p"] < 0.95:
        _refuse(MSG_THINKING_TOP_P)
    if body.get("top_k") is not None:
        _refuse(MSG_THINKING_TOP_K)
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") in ("any", "tool"):
        _refuse(MSG_THINKING_FORCED_TOOL)


def check_messages(body: Any, max_output_tokens: int | None) -> str | None:
    """The first problem of a Messages body, or None. `max_output_tokens` is the model's cap."""
    try:
        if not isinstance(body, dict):
            _fail("body", "Input should be a valid dictionary")
        _common(body, _MESSAGES_FIELDS)
        if "max_tokens" not in body:
            _fail("max_tokens", "Field required")
        max_tokens = body["max_tokens"]
        if not _is_int(max_tokens):
            _fail("max_tokens", "Input should be a valid integer")
        if max_tokens < 0:
            _fail("max_tokens", "Input should be greater than or equal to 0")
        if max_output_tokens is not None and max_tokens > max_output_tokens:
            _fail(
                "max_tokens",
                f"{max_tokens} > {max_output_tokens}, which is the maximum allowed for this model",
            )
        if "stream" in body and not isinstance(body["stream"], bool):
            _fail("stream", "Input should be a valid boolean")
        if "stop_sequences" in body:
            seqs = body["stop_sequences"]
            if not isinstance(seqs, list) or not all(isinstance(s, str) for s in seqs):
                _fail("stop_sequences", "Input should be a valid list of strings")
        if "metadata" in body:
            metadata = body["metadata"]
            if not isinstance(metadata, dict):
                _fail("metadata", "Input should be a valid dictionary")
            for key in metadata:
                if key != "user_id":
                    _fail(f"metadata.{key}", "Extra inputs are not permitted")
            if metadata.get("user_id") is not None and not isinstance(metadata["user_id"], str):
                _fail("metadata.user_id", "Input should be a valid string")
        if "service_tier" in body and body["service_tier"] not in ("auto", "standard_only"):
            _fail("service_tier", "Input should be 'auto' or 'standard_only'")
        for name in ("temperature", "top_p"):
            if name in body and (not _is_number(body[name]) or not 0 <= body[name] <= 1):
                _fail(name, "Input should be a number between 0 and 1")
        if "top_k" in body and (not _is_int(body["top_k"]) or body["top_k"] < 0):
            _fail("top_k", "Input should be an integer greater than or equal to 0")
        _thinking_compatible(body)
        find_breakpoints(body)
    except (_Invalid, BreakpointError) as exc:
        return str(exc)
    return None


def check_count_tokens(body: Any) -> str | None:
    """The first problem of a count_tokens body, or None."""
    try:
        if not isinstance(body, dict):
            _fail("body", "Input should be a valid dictionary")
        _common(body, _COUNT_FIELDS)
    except _Invalid as exc:
        return str(exc)
    return None


def _custom_id(path: str, value: Any) -> str:
    if not isinstance(value, str):
        _fail(path, "Input should be a valid string")
    if not value:
        _fail(path, "String should have at least 1 character")
    if len(value) > 64:
        _fail(path, "String should have at most 64 characters")
    if not _CUSTOM_ID.match(value):
        _fail(path, f"String should match pattern '{_CUSTOM_ID.pattern}'")
    return value


def check_batch_create(body: Any) -> str | None:
    """The first schema problem of a `POST /v1/messages/batches` body, or None.

    Only the envelope is judged here: `requests` (1 to 100,000 items), each a `custom_id`
    (1-64 of `[a-zA-Z0-9_-]`, unique in the batch) and a `params` object. Whether `params`
    is a valid Messages body is not: the API validates it asynchronously and reports a bad
    one as that request's `errored` result, leaving the rest of the batch alone.
    """
    try:
        if not isinstance(body, dict):
            _fail("body", "Input should be a valid dictionary")
        for name in body:
            if name != "requests":
                _fail(name, "Extra inputs are not permitted")
        if "requests" not in body:
            _fail("requests", "Field required")
        requests = body["requests"]
        if not isinstance(requests, list):
            _fail("requests", "Input should be a valid list")
        if not requests:
            _fail("requests", "List should have at least 1 item after validation, not 0")
        if len(requests) > MAX_BATCH_REQUESTS:
            _fail(
                "requests",
                f"List should have at most {MAX_BATCH_REQUESTS} items after validation, not {len(requests)}",
            )
        seen: dict[str, int] = {}
        for i, item in enumerate(requests):
            if not isinstance(item, dict):
                _fail(f"requests.{i}", "Input should be a valid dictionary")
            for name in item:
                if name not in ("custom_id", "params", BATCH_HEADERS_KEY):
                    _fail(f"requests.{i}.{name}", "Extra inputs are not permitted")
            extension = item.get(BATCH_HEADERS_KEY)
            if extension is not None and (
                not isinstance(extension, dict) or not all(isinstance(v, str) for v in extension.values())
            ):
                _fail(f"requests.{i}.{BATCH_HEADERS_KEY}", "Input should be a dictionary of strings")
            if "custom_id" not in item:
                _fail(f"requests.{i}.custom_id", "Field required")
            custom_id = _custom_id(f"requests.{i}.custom_id", item["custom_id"])
            if "params" not in item:
                _fail(f"requests.{i}.params", "Field required")
            if not isinstance(item["params"], dict):
                _fail(f"requests.{i}.params", "Input should be a valid dictionary")
            first = seen.setdefault(custom_id, i)
            if first != i:
                _fail(
                    f"requests.{i}.custom_id",
                    f"'{custom_id}' is already used by requests.{first}; "
                    "each custom_id must be unique within a Message Batch",
                )
    except _Invalid as exc:
        return str(exc)
    return None
