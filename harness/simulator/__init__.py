"""An Anthropic Messages API and PostHog capture simulator, runnable as `python -m harness.simulator`.

An island: it imports nothing from the rest of `harness` (a test checks), so it can be run,
tested and profiled on its own. Public entry points: `cli_main(argv) -> int` (what
`harness simulate` delegates to), `main()`, `run_simulator(config, ready)`, and
`Simulator(config)` for use inside an existing event loop.

Control endpoints (same port): `GET /_sim/requests` (ground truth, JSON lines),
`POST /_sim/reset` (forget requests, events, buckets, outages; restore the startup faults
and the request counter), `GET /_sim/events[?summary=1]` (PostHog events: received,
unique, duplicates, events), `GET|POST /_sim/faults` (`{"rates": {name: p}, "model"?,
"retry_after_s"?, "slow_first_byte_s"?}` replaces the rates of every model or of one),
`POST /_sim/outage` (`{"target": "anthropic"|"posthog", "mode": "refuse"|"500",
"seconds": S}`; an Anthropic "refuse" closes the port, so PostHog on it goes too).

Ground-truth record (one per `POST /v1/messages`, in order of receipt): request_id, model
(as requested), call_id / attempt (headers `x-harness-call-id`, `x-harness-attempt`),
stream, received_unix, status (HTTP status sent; null when the connection was cut
before any response), fault, intended_ttft_s (receipt → first content delta),
intended_gaps_s (between deltas; null above 4,096 deltas), intended_total_s (receipt →
last byte), sent_ttft_s / sent_total_s (streams: when the first delta / last byte actually
left), input_tokens, output_tokens (deltas sent), stop_reason, retry_after (429),
and when relevant limited (which rate limit), fault_after_tokens, client_closed.

Keys: any non-empty key is accepted, except the test hooks `sk-ant-revoked…` (401
authentication_error) and `sk-ant-noperm…` (403 permission_error).

Fault names: rate_limit, overloaded, api_error, midstream_error, drop, truncate,
slow_first_byte (see `faults.py`). Delays are multiplied by `--time-scale` except
`slow_first_byte_s`.
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
