"""Shipping a host's logs off the host: every container's output (the shim's JSON-lines files)
and the agent's own, as RFC 5424 syslog with RFC 6587 octet-counting framing over TCP or TLS.

  syslog.py   the message and its framing (pure)
  tail.py     following the shim's files across rotations (facts: reads only)
  spool.py    the bounded on-disk buffer, in order, drops above the bound counted
  sender.py   delivery, committing only what the collector's TCP acknowledged
  shipper.py  the two threads (reader, sender) the agent runs

Under host/ (the agent runs it) and over compose/ (which stack and service a container is)."""
