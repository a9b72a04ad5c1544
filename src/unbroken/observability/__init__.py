"""What the master tells the outside world beyond the control socket.

    history.py    past reloads, bounded, persisted beside the control socket
    responder.py  a tiny non-blocking HTTP/1.0 responder run inside the master's loop
    ready.py      the readiness answer for load balancers (pure)
    metrics.py    Prometheus text exposition, aggregated from workers' heartbeats (pure)
    latency.py    the latency buckets workers count into (pure, shared with engines)
    cuts.py       requests cut at --graceful-timeout: described, reported, attributed (pure)
    hub.py        the one object the master calls: wires the above into its loop
"""
