"""The processes on the bus, in rooms by role:

    kafka/    the only modules that speak Kafka (aiokafka): publishing, the consume loop, admin
    stores/   Redis state: context, correlations and their outbox, circuit breakers
    workers/  the router worker, the correlator, rejections
    agents/   the agent SDK (``@agent``) and its runtime
    cli/      the ``routeyard`` command
    tools/    operator tools: replay, explain, dead letters
    dev/      embedded servers, ``routeyard dev`` and the demo

Thin: decode -> call the router layer -> publish -> commit. ``routeyard.consumers.app`` is the one
place that creates clients and engines. Users import from ``routeyard`` itself.
"""
