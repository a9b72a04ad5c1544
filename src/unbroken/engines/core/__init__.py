"""The connection core every engine stands on, one room per idea.

    states.py      the connection's and the exchange's states and transition tables (pure)
    exchange.py    one request and its response: what an engine holds and answers through
    connection.py  one HTTP/1.1 connection (an asyncio.Protocol): parse, route, time out
    server.py      the worker's connections: accept, count, park, drain, hand over
    acceptor.py    the accept loop of one listener, with back-pressure
    tls.py         the server's TLS context, built at boot
    access_log.py  one line per exchange or rejection

An engine imports `Exchange` and `ExchangeListener` to serve requests, and
`ConnectionServer`/`CoreCounters` to run them; nothing else here is its business.
"""
