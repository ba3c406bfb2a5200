"""What a container is asked to be, as typed values: published ports, mounts, resources,
environment, restart policy, healthcheck and security options, and the run request that
gathers them.

Pure parsers, shared by every front end that describes containers: `provision container run`
flags, compose service entries in a stack file (stack/), and later the Docker Engine API. Each
input is parsed here once into these values; containers/ and network/ take the values, never
the text. Nothing here touches the system (a seccomp profile file is read to check it).
"""
