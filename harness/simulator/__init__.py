"""An Anthropic Messages API and PostHog capture simulator, runnable as `python -m harness.simulator`.

An island: it imports nothing from the rest of `harness` (a test checks), so it can be run,
tested and profiled on its own. Public entry points: `cli_main(argv) -> int` (what
`harness simulate` delegates to), `main()`, `run_simulator(config, ready)`, and
`Simulator(config)` for use inside an existing event loop.

Control endpoints (same port): `GET /_sim/requests` (ground truth, JSON lines),
`GET /_sim/batches[?custom_ids=1]` (every Message Batch created, JSON lines, see below),
`POST /_sim/reset` (forget requests, batches, events, buckets, outages, the prompt cache, PostHog seeds,
insights and dashboards; restore the startup faults and the request counter),
`GET /_sim/events[?summary=1]` (PostHog events: received, unique, duplicates, events),
`GET|POST /_sim/faults` (`{"rates": {name: p}, "model"?,
"retry_after_s"?, "slow_first_byte_s"?}` replaces the rates of every model or of one),
`POST /_sim/outage` (`{"target": "anthropic"|"posthog", "mode": "refuse"|"500",
"seconds": S}`; an Anthropic "refuse" closes the port, so PostHog on it goes too),
`POST /_sim/posthog/seed`, `GET /_sim/posthog/api-log` (see below).

PostHog app API (`posthog_api.py`, personal API key as `Authorization: Bearer phx_...`):
`GET /api/projects/{id}/`, HogQL `POST /api/projects/{id}/query/` over the captured and
seeded events in `events` and `posthog.ai_events` (subset in `hogql.py`, tables in
`posthog_data.py`), insights and dashboards; flags `--posthog-personal-key`,
`--posthog-project-id`, `--posthog-timezone`, `--posthog-ai-cutover`,
`--posthog-ai-retention-days`.

Ground-truth record (one per `POST /v1/messages`, in order of receipt): request_id, model
(as requested), call_id / attempt (headers `x-harness-call-id`, `x-harness-attempt`),
stream, received_unix, status (HTTP status sent; null when the connection was cut
before any response), fault, intended_ttft_s (receipt → first content delta),
intended_gaps_s (between deltas; null above 4,096 deltas), intended_total_s (receipt →
last byte), intended_first_text_s (receipt → first text delta; null without text),
sent_ttft_s / sent_total_s (streams: when the first delta / last byte actually left),
sent_first_text_s / sent_first_thinking_s (streams: when the first `text_delta` /
`thinking_delta` left, same origin as sent_ttft_s; null when none was sent),
input_tokens (the final, cumulative count as usage reports it: the prompt's uncached part after
the last cache breakpoint, plus web search results), output_tokens
(tokens sent, thinking included), thinking_tokens, tool_calls (names of the tools the
reply calls), web_search_requests, refused, stop_reason, retry_after (429),
expected_kind (the top-level grader of `x-harness-expected`, else null), quality_pass
(whether the answer sent meets that grader; null without one), judge_score (judge calls),
prompt caching (see below): cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens,
cache_eligible (the prefix at the last breakpoint reaches the model's minimum; null without a
breakpoint), cache_hit (read > 0), cache_breakpoints (how many, the automatic one included),
cache_prefix_tokens (tokens through the last breakpoint), cache_min_tokens, cache_hit_breakpoint
(which breakpoint's lookback found the read, 0 = the first in prompt order) and cache_hit_at (the
JSON path of the block read through, e.g. "system.1"); and when relevant limited (which rate
limit), fault_after_tokens, client_closed, judge_malformed (judge calls).

Simulator features (request features answered with the real API's wire shapes; every
choice is a function of the seed, the model and the request content, see `blocks.py`):

- Extended thinking. `thinking: {"type": "enabled", "budget_tokens": N}` → a `thinking`
  block first (streamed: `content_block_start` with empty thinking and signature,
  `thinking_delta`s, one `signature_delta`, stop), then the answer. It thinks 35-85% of
  N tokens; `{"type": "adaptive"}` thinks about 1,024 tokens × 0.5-1.5, scaled by
  `output_config.effort` (low 0.25, medium 0.6, high 1, xhigh 1.6, max 2.5) and capped at
  half of max_tokens. `display: "omitted"` sends no thinking text, only the signature.
  Thinking counts in `output_tokens` and is reported as
  `usage.output_tokens_details.thinking_tokens` (the field SDK 2.14 models; sent only
  when the reply thought). It streams at the profile's `thinking_tokens_per_s` (default:
  the model's output speed), so the time to the first text grows with the budget.
- Tool use (custom tools with `input_schema`). `tool_choice` none: never; tool: calls the
  named tool; any: calls the first offered tool the last user turn names (whole word,
  any case; a web search tool also counts as named by the word "search"), else one
  picked by the request hash; auto (the default): calls the first tool the last user
  turn names, else answers in text. Auto calls begin with a short
  text block ("Let me use NAME."); forced calls do not (as documented). The `tool_use`
  block (`toolu_01…`) streams as an empty `input_json_delta` then 2-8 character chunks,
  one output token each; `stop_reason: "tool_use"`. The input fills the required
  properties (all properties when none is required): const, else the first enum value,
  strings are capitalised words of the prompt (else its words), integers and numbers
  deterministic, booleans by hash, arrays one item, objects recursively. max_tokens may
  end the reply inside the JSON (`stop_reason: "max_tokens"`; unstreamed `input: {}`).
- Web search (`tools: [{"type": "web_search_20250305", "name": "web_search",
  "max_uses": N}]`, any `web_search_*` type). Used when tool_choice names it, when any
  picks it, or under auto when the last user turn names `web_search` or contains the
  word "search". The reply is a short text, then one or two (at most max_uses) pairs of
  `server_tool_use` (`srvtoolu_01…`, input `{"query": first six words of the prompt}`,
  streamed as input_json_delta) and `web_search_tool_result` (3-5 `web_search_result`s
  on example.com/.org/.net, sent whole in content_block_start after the profile's
  `web_search_s`, default 0.8 s), then the answer. Each search adds 1,500-4,000 input
  tokens: message_start shows the prompt's count, the final usage the cumulative one.
  `usage.server_tool_use` = `{"web_search_requests": k, "web_fetch_requests": 0}`
  whenever a web search tool is offered. No citations. Other server tools are accepted
  and never used.
- Refusals. The last user turn containing `[[refuse]]` or Anthropic's documented test
  string `ANTHROPIC_MAGIC_STRING_TRIGGER_REFUSAL_…` → `stop_reason: "refusal"` with no
  content block and `output_tokens` 1 at message_start, 0 in the final usage;
  `[[refuse:N]]` → N text tokens, then the refusal. `stop_details` is
  `{"type": "refusal", "category": null, "explanation": null}` (on message_delta when
  streamed). A refusal has no thinking or tool calls.
- Prompt caching (`promptcache.py`, which states the rules in full). Breakpoints are
  `cache_control: {"type": "ephemeral", "ttl"?: "5m"|"1h"}` on a tool, a system block or a
  message block, and the top-level `cache_control` (automatic caching: the last block that
  can carry one). Prefixes run tools → system → messages and are keyed by (API key, model,
  exact content without the markers); each breakpoint looks back up to 20 blocks for an
  entry; reads, 1-hour and 5-minute writes follow the docs' A/B/C billing. An entry is usable
  from the writer's first token (concurrent requests all write) for 5 or 60 simulated
  minutes (times `--time-scale`; never expiring at 0), refreshed by each read. A prefix under
  the model's `cache_min_tokens` (profile; the documented minimums) is neither read nor
  written, without an error. Web search, citations and `speed` invalidate system and message
  prefixes; `tool_choice`, thinking type/budget and images the message prefixes; a tool
  definition everything. Usage: `input_tokens` is the part after the last breakpoint,
  `cache_read_input_tokens`, `cache_creation_input_tokens` and `cache_creation` (5m/1h) in the
  body and message_start (the final message_delta repeats the three counters, not the
  breakdown, as SDK 2.14 models it). TTFT counts a read token as `ttft_cache_read_factor`
  (default 0.1) of an uncached one; input tokens per minute count uncached and written tokens,
  not reads. 400s: more than 4 breakpoints ("A maximum of 4 blocks with cache_control may be
  provided. Found 5."), a 1h breakpoint after a 5m one, an automatic TTL that differs from the
  last block's own. The answer never depends on the markers. count_tokens accepts them and
  ignores caching. Message Batches share the key's cache: at creation each request is read
  and written, in processing order, at the simulated instant it finishes.
- Final usage. The last `message_delta` repeats the cumulative input_tokens,
  cache_creation_input_tokens, cache_read_input_tokens and output_tokens, plus
  server_tool_use and output_tokens_details when they apply; message_start carries
  output_tokens 1.
- Validation (400 invalid_request_error, the real API's messages where recorded):
  budget under 1,024 or not below max_tokens; thinking (enabled or adaptive) with a
  forced tool_choice, temperature other than 1, top_p under 0.95 or any top_k;
  tool_choice without tools or naming no offered tool; duplicate tool names; custom
  tool names outside `^[a-zA-Z0-9_-]{1,128}$`; a web search tool not named web_search.

Message Batches (`batches.py` over HTTP, `batchstore.py` for state and timing):
`POST /v1/messages/batches` `{"requests": [{"custom_id", "params"}]}` → MessageBatch;
`GET /v1/messages/batches/{id}`; `GET /v1/messages/batches?limit&after_id&before_id`
(newest first, `{data, has_more, first_id, last_id}`); `POST …/{id}/cancel`;
`DELETE …/{id}` (ended batches only; `message_batch_deleted`); `GET …/{id}/results`
(`application/x-jsonl`, streamed, one `{"custom_id", "result"}` line per request in a
seeded shuffle). Batches are visible to the API key that created them. The envelope is
judged at create (400 `invalid_request_error`: 1-100,000 requests, custom_id 1-64 of
`[a-zA-Z0-9_-]` and unique; 413 above 256 MB); each request's params are judged as a
Messages body when the batch is built and a bad one becomes an `errored` result, as the
real API validates params asynchronously. Counts stay `processing` until the whole batch
ends. Timing: each model's share is processed within (`batch_base_s` +
`batch_per_request_s` × its requests) × lognormal(0, `batch_sigma`) simulated seconds
(profile keys, defaults 120 / 0.06 / 0.25: about 3 minutes for 1,000 requests), times
`--time-scale`; the batch ends with its longest window, at the latest at the 24-hour
expiry (also scaled; later requests `expired`). A cancel answers `canceling`; in-flight
requests still finish for 10 simulated seconds, then the batch ends and the rest are
`canceled`. A succeeded result is the non-streamed answer the same params get live
(`usage.service_tier` "batch"); a request whose envelope item carries the harness's headers
as `"x-harness-headers": {...}` (the simulator's one extension of the envelope) gets the
quality model's answer, the same as live for the same call id. Limits (profile `[batch_limits]`, per key, shared by
every model): `rpm` over all batch endpoints and `queue` (requests waiting to be
processed), each 429 `rate_limit_error` with `retry-after`; batch responses carry
`anthropic-ratelimit-requests-*`. Ground truth per batch: id, key_id, call_id /
attempt (headers), created_unix, request_count, models, custom_ids_sha256 (of the
custom_ids joined by newlines, as submitted; the list itself with `?custom_ids=1`), processing_status, request_counts, intended_end_s, ended_unix,
cancel_initiated_unix, deleted_unix, cache (the prompt cache over its requests: read_tokens,
write_5m_tokens, write_1h_tokens, hits).

Quality model (`quality.py`; only for requests with the harness's headers, which it
sends in simulator mode; without them every reply is the filler answer above, unchanged):

- `x-harness-expected`: base64url without padding of the UTF-8 JSON of the case's
  `expected` (graders: contains, equals, regex, number, json, tool_call, judge, all, any;
  see `graders.py`); `x-harness-tags`: the case's tags, comma-joined. The answer passes
  with the profile's probability (`quality` table: `pass`, or the lowest value of the
  case's tags it names; thinking removes 0.075 of the failures per doubling of
  1 + budget/1024, at most 0.3 of them). A pass is a short sentence around what the
  grader wants (the needles, the exact label, a string the regex matches, the number,
  a JSON instance of the schema, the tool call with at least the wanted input, the
  reference); a failure is a plausible wrong answer (another label or name, a near-miss
  number outside the tolerance, a near-miss string, JSON missing a required field or of
  a wrong type, another tool or none or one wrong input value, an unrelated hedge). The
  draw is keyed by seed, model, content, expectation, tags and the content's occurrence
  number for that model: retries (same `x-harness-call-id`) repeat their first attempt,
  repeats of a case are new draws, and models share a per-case difficulty. The answer
  is checked against the grader before it is sent; `quality_pass` is what the reply
  sent actually scores (so a passing answer cut by max_tokens, a tool call with no tool
  offered, or a grader nothing can fail, are recorded as they are). An unreadable
  header or a known grader written wrong is a 400 naming the header; a grader unknown
  here gets the filler answer (expected_kind set, quality_pass null).
- `x-harness-judge: 1`: a judge call. The verdict text is `{"score": s, "reason": "..."}`
  with s = 0.05 + 0.9 × (share of the key words of `<reference>`, else of `<rubric>` less
  its words about answers, that `<answer>` says) ± 0.05 noise seeded by the three texts,
  clamped to [0, 1], two decimals. Fault `judge_malformed=<rate>`: a verdict in prose,
  without a score, or cut short; never on a re-ask (a judge call with more than one user
  turn) unless the rate is 1.

Keys: any non-empty key is accepted, except the test hooks `sk-ant-revoked…` (401
authentication_error) and `sk-ant-noperm…` (403 permission_error).

Fault names: rate_limit, overloaded, api_error, midstream_error, drop, truncate,
slow_first_byte (see `faults.py`); for single requests of a Message Batch
batch_errored (an `errored` result: overloaded_error or api_error) and batch_expired;
and judge_malformed (content, drawn apart). Delays are multiplied by `--time-scale`
except `slow_first_byte_s`. The PostHog query endpoint has its own: posthog_throttle (a
rate) and the settings posthog_throttle_every (every Nth query) and posthog_retry_after_s
(default 3).
"""

from harness.simulator.app import SimConfig, Simulator, cli_main, main, run_simulator
from harness.simulator.faults import FAULT_NAMES
from harness.simulator.profiles import SimulatorConfigError, load_profiles

__all__ = [
    "FAULT_NAMES",
    "SimConfig",
    "Simulator",
    "SimulatorConfigError",
    "cli_main",
    "load_profiles",
    "main",
    "run_simulator",
]
