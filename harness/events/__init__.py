"""PostHog events: exactly one per finished call, journaled, delivered by a child process, resendable.

One module per job (import from them; this package imports nothing, so the delivery
child stays light):

- `event`  — `CallRecord` → the one event (`build_event`, `EventSettings`, the `distinct_id` rule);
- `journal` — the events journal/outbox line format;
- `sink`   — `EventSink`: write = build + journal + pipe; crash recovery; outbox at close;
- `pipe`   — the parent's side of the delivery child (start, non-blocking pipe, its report);
- `child`  — `python -m harness.events.child`: the `posthog` SDK and its delivery ledger;
- `resend` — `harness events resend`.
"""
