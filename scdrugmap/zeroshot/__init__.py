"""Zero-shot drug-response calls from a chat model, the route the scDrugMap benchmark took.

Cells go to any OpenAI-compatible chat-completions endpoint as text (their
top expressed genes), in batches; answers are parsed strictly, malformed ones
retried a bounded number of times, and every cell left unclassified is
recorded with its reason instead of being dropped silently.

- `prompt`: cells -> gene lists -> chat messages (the template lives there).
- `client`: the HTTP client (timeouts, bounded retries, no key in any message).
- `parse`: strict parsing of one answer against the ids that were sent.
- `run`: selection, batches, retries and the records in the store.
"""
