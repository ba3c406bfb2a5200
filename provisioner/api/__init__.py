"""The Docker Engine API (1.41) on a host: the docker CLI, docker-compose and docker-py drive
provisioner's own containers, images, volumes and network — no Docker daemon.

    server.py     unix socket / TLS listener, versions, routes, errors
    http.py       HTTP/1.1 on one connection: requests, JSON, chunked streams, hijacking
    engine.py     what handlers share (the container manager, the store, events, exec instances)
    create.py     a create request → a RunRequest (pure; what cannot be honoured is refused)
    views.py      containers as Docker shows them (pure)
    containers.py, streams.py, execs.py, images.py, volumes.py, networks.py, system.py: the endpoints
    dialstdio.py  `docker system dial-stdio`'s job: stdin/stdout ↔ the socket (DOCKER_HOST=ssh://)
"""
