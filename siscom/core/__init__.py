"""The pure core: wire protocol, record decoding, subscriptions and outboxes. No I/O, no clocks
of its own, so everything here is tested synchronously."""
