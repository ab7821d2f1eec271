"""Callbacks: when a job with a callback_url ends, a signed POST of its JSON to that URL.

- `targets`: the URL, read at submit (a 422 when it can't be one) and again to send to it;
- `addresses`: which addresses a callback may reach (the address filter) and the resolver it checks;
- `posting`: one POST to the checked addresses: no redirect, short timeouts, a bounded answer;
- `signing`: each owner's secret and the Darkroom-Signature header;
- `deliveries`: the record of each callback, its attempts and their backoff, the actor that makes
  them, and the re-sender of lost messages.

docs/callbacks.md says how a receiver verifies them.
"""
