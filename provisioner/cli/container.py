"""`provision container …`: Docker's run/ps/logs/stop/start/restart/rm/exec/inspect, thin over
containers.lifecycle."""
from __future__ import annotations

import json
import sys
import time

import click

from .app import App, emit, json_option, pass_app, status, table


def _manager(app: App):
    from ..containers.lifecycle import Manager  # imported late: `provision --help` stays light

    return Manager(app.root, app.runner)


def _print_line(line, timestamps: bool = False) -> None:
    out = sys.stderr if line.stream == "stderr" else sys.stdout
    out.write(line.format(timestamps))
    out.flush()


@click.group("container")
def container_group() -> None:
    """Run containers from images in the store (Docker's flags and meanings)."""


@container_group.command("run", context_settings={"allow_interspersed_args": False, "help_option_names": ["--help"]})
@click.option("-d", "--detach", is_flag=True, help="Run in the background and print the container id.")
@click.option("--name", help="Container name (unique).")
@click.option("-p", "--publish", "ports", multiple=True, metavar="[IP:]HOST:CONTAINER[/udp]")
@click.option("-v", "--volume", "volumes", multiple=True, metavar="SRC:DST[:ro]")
@click.option("-e", "--env", "env", multiple=True, metavar="K=V")
@click.option("--env-file", "env_files", multiple=True, metavar="FILE")
@click.option("--link", "links", multiple=True, metavar="NAME[:ALIAS]")
@click.option("--restart", default="no", show_default=True, metavar="no|on-failure[:N]|always|unless-stopped")
@click.option("-m", "--memory", metavar="BYTES[k|m|g]")
@click.option("--cpus", metavar="N")
@click.option("-u", "--user", metavar="USER[:GROUP]")
@click.option("-w", "--workdir", metavar="DIR")
@click.option("--entrypoint", metavar="CMD")
@click.option("-h", "--hostname", metavar="NAME")
@click.option("--rm", is_flag=True, help="Remove the container (and its anonymous volumes) when it exits.")
@click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST[:PORT]")
@click.option("--security-opt", "security_opt", multiple=True,
              metavar="seccomp=unconfined|PROFILE.json|no-new-privileges",
              help="Docker's security options: another seccomp profile, none, or no-new-privileges.")
@click.option("--health-cmd", metavar="CMD", help="Healthcheck command, run by /bin/sh -c in the container.")
@click.option("--health-interval", metavar="DURATION", help="Time between checks (e.g. 30s, 1m30s).")
@click.option("--health-timeout", metavar="DURATION", help="Time a check may take.")
@click.option("--health-retries", type=int, metavar="N", help="Failures in a row that make it unhealthy.")
@click.option("--health-start-period", metavar="DURATION", help="Start-up time whose failures do not count.")
@click.option("--no-healthcheck", is_flag=True, help="Run no healthcheck, not even the image's HEALTHCHECK.")
@click.option("--network", "networks", multiple=True, metavar="NAME|host|none|container:NAME",
              help="A user-defined network to join (repeatable; the first is the primary), or a mode.")
@click.option("--network-alias", "network_aliases", multiple=True, metavar="NAME",
              help="Another name it has on its (first) network.")
@click.option("--ip", metavar="IPV4", help="Its address on its (first) user-defined network.")
@click.option("--cap-add", "cap_add", multiple=True, metavar="CAP", help="Add a capability (or ALL).")
@click.option("--cap-drop", "cap_drop", multiple=True, metavar="CAP", help="Drop a capability (or ALL).")
@click.option("--privileged", is_flag=True, help="Every capability, no seccomp, the host's devices.")
@click.option("--read-only", "read_only", is_flag=True, help="Mount the root filesystem read-only.")
@click.option("--tmpfs", "tmpfs", multiple=True, metavar="DST[:OPTIONS]", help="A tmpfs (noexec,nosuid,nodev).")
@click.option("--mount", "mounts", multiple=True, metavar="type=…,source=…,target=…", help="A mount, long form.")
@click.option("--ulimit", "ulimits", multiple=True, metavar="NAME=SOFT[:HARD]")
@click.option("--sysctl", "sysctls", multiple=True, metavar="KEY=VALUE", help="A namespaced kernel setting.")
@click.option("--add-host", "add_hosts", multiple=True, metavar="NAME:IP", help="An /etc/hosts line (IP host-gateway: "
              "its network's gateway).")
@click.option("--dns", "dns", multiple=True, metavar="IP")
@click.option("--dns-search", "dns_search", multiple=True, metavar="DOMAIN")
@click.option("--dns-option", "dns_options", multiple=True, metavar="OPTION")
@click.option("--init", is_flag=True, help="Run tini as PID 1 (reaps zombies, forwards signals).")
@click.option("-l", "--label", "labels", multiple=True, metavar="KEY[=VALUE]")
@click.option("--pids-limit", metavar="N", help="At most N processes (-1: unlimited).")
@click.option("--shm-size", metavar="BYTES[k|m|g]", help="Size of /dev/shm (default 64m).")
@click.option("--memory-reservation", metavar="BYTES[k|m|g]", help="A soft memory limit.")
@click.option("--group-add", "group_add", multiple=True, metavar="GROUP")
@click.option("--stop-signal", metavar="SIGNAL", help="The signal that stops it (default: the image's, else TERM).")
@click.option("--stop-timeout", type=int, metavar="SECONDS", help="Seconds from the stop signal to SIGKILL "
              "(default 10).")
@click.option("--platform", metavar="OS/ARCH", help="Refuse an image for another platform than this host's.")
@click.option("--pull", type=click.Choice(["missing", "always", "never"]), default="missing", show_default=True)
@click.option("-i", "--interactive", is_flag=True, help="Keep stdin open (attached: this terminal's input).")
@click.option("-t", "--tty", is_flag=True, help="Give the process a terminal (attached: this terminal).")
@click.option("--cloud-metadata", is_flag=True,
              help="Let the container reach the cloud's instance metadata service (169.254.169.254: the "
                   "instance's credentials); containers cannot by default.")
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_app
def run_cmd(app: App, detach, name, ports, volumes, env, env_files, links, restart, memory, cpus, user,
            workdir, entrypoint, hostname, rm, insecure, security_opt, health_cmd, health_interval, health_timeout,
            health_retries, health_start_period, no_healthcheck, networks, network_aliases, ip, cap_add, cap_drop,
            privileged, read_only, tmpfs, mounts, ulimits, sysctls, add_hosts, dns, dns_search, dns_options, init,
            labels, pids_limit, shm_size, memory_reservation, group_add, stop_signal, stop_timeout, platform, pull,
            interactive, tty, cloud_metadata, image, command) -> None:
    """Create and start a container from IMAGE (pulled when missing)."""
    from dataclasses import replace

    from ..runspec.health import HealthFlags
    from ..runspec.request import from_flags

    health = HealthFlags(cmd=health_cmd, interval=health_interval, timeout=health_timeout, retries=health_retries,
                         start_period=health_start_period, disable=no_healthcheck)
    req = from_flags(image, tuple(command), name=name, detach=detach, ports=ports, volumes=volumes, env=env,
                     env_files=env_files, links=links, restart=restart, memory=memory, cpus=cpus, user=user,
                     workdir=workdir, entrypoint=entrypoint, hostname=hostname, rm=rm, insecure_registries=insecure,
                     security_opt=security_opt, health_flags=health, mounts=mounts, tmpfs=tmpfs, cap_add=cap_add,
                     cap_drop=cap_drop, privileged=privileged, read_only=read_only, ulimits=ulimits, sysctls=sysctls,
                     pids_limit=pids_limit, shm_size=shm_size, memory_reservation=memory_reservation, init=init,
                     tty=tty, interactive=interactive, stop_signal=stop_signal, stop_timeout=stop_timeout,
                     platform=platform, labels=labels, networks=networks, network_aliases=network_aliases, ip=ip,
                     add_hosts=add_hosts, dns=dns, dns_search=dns_search, dns_options=dns_options,
                     group_add=group_add, cloud_metadata=cloud_metadata)
    req = replace(req, pull=pull)
    mgr = _manager(app)
    if (tty or interactive) and not detach:
        sys.exit(mgr.run_foreground(req))
    rec = mgr.run(req)
    if detach:
        click.echo(rec.id)
        return
    try:
        for line in mgr.logs(rec.id, follow=True):
            _print_line(line)
    except KeyboardInterrupt:
        status(f"detached from {rec.name}; it keeps running")
        sys.exit(130)
    st = mgr.wait(rec)
    if rm and mgr.records.find(rec.id) is not None:  # a concurrent `ps` may have reaped it already
        mgr.rm(rec.id, force=True, remove_volumes=True)
    sys.exit(st.exit_code or 0)


def _ago(ts: float) -> str:
    s = max(0, int(time.time() - ts))
    for unit, n in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if s >= n:
            return f"{s // n} {unit}{'s' if s // n > 1 else ''} ago"
    return f"{s} seconds ago"


def _status_text(st: dict) -> str:
    state = st["state"]
    if state == "running":
        return "Up" + (f" (restarted {st['restart_count']}x)" if st["restart_count"] else "")
    if state == "restarting":
        return f"Restarting ({st['exit_code']})"
    if state in ("exited", "dead"):
        return f"Exited ({st['exit_code']})" + (" (supervisor gone)" if state == "dead" else "")
    return state.capitalize()


@container_group.command("ps")
@click.option("-a", "--all", "all_", is_flag=True, help="Show stopped containers too.")
@json_option
@pass_app
def ps_cmd(app: App, all_: bool) -> None:
    """List containers."""
    rows = _manager(app).ps(all_)
    emit(app, rows, lambda: click.echo(table(
        [[r["id"][:12], r["image"], r["command"][:30], _ago(r["created"]), _status_text(r["status"]),
          ", ".join(r["ports"]), r["name"]] for r in rows],
        ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"])))


@container_group.command("logs")
@click.option("-f", "--follow", is_flag=True)
@click.option("-n", "--tail", type=int, default=None)
@click.option("-t", "--timestamps", is_flag=True)
@click.option("--since", metavar="TIME", help="Only lines since TIME: 2026-01-02T13:23:37Z, a date, Unix seconds, "
              "or a duration back from now (10m, 1h30m).")
@json_option
@click.argument("container")
@pass_app
def logs_cmd(app: App, follow: bool, tail: int | None, timestamps: bool, since: str | None, container: str) -> None:
    """Print a container's output (both runs of a restarted one). With --json: the shim's records,
    one JSON object per line ({"log", "stream", "time"})."""
    from ..containers.shimlogs import parse_since

    lines = _manager(app).logs(container, tail=tail, follow=follow,
                               since=parse_since(since) if since is not None else None)
    for line in lines:
        if app.json:
            sys.stdout.write(json.dumps({"log": line.text, "stream": line.stream, "time": line.time}) + "\n")
            sys.stdout.flush()
        else:
            _print_line(line, timestamps)


@container_group.command("stats")
@click.option("--no-stream", is_flag=True, help="Print one sample and exit (CPU % over one interval).")
@click.option("--interval", type=click.FloatRange(0.2, 3600), default=1.0, show_default=True,
              help="Seconds between samples.")
@json_option
@click.argument("containers", nargs=-1)
@pass_app
def stats_cmd(app: App, no_stream: bool, interval: float, containers: tuple[str, ...]) -> None:
    """Live resource usage of running containers (docker stats' columns), read from their cgroups
    (v1, hybrid or v2) and network namespaces, with the host's load, memory and btrfs use. With
    --json: one JSON document per sample."""
    from ..metrics import stats
    from ..metrics.collect import Collector

    col = Collector(app.root)
    prev = col.snapshot()
    while True:
        time.sleep(interval)
        cur = col.snapshot()
        rows = [r for r in stats.rows(prev, cur) if not containers or any(
            c in (r.name, r.id) or (len(c) >= 3 and r.id.startswith(c)) for c in containers)]
        if app.json:
            click.echo(json.dumps({"host": stats.host_row(cur).to_json(), "containers": [r.to_json() for r in rows]},
                                  separators=(",", ":") if not no_stream else (", ", ": ")))
        else:
            if not no_stream and sys.stdout.isatty():
                click.echo("\033[2J\033[H", nl=False)   # redraw in place, as docker stats does
            click.echo(stats.host_line(stats.host_row(cur)))
            click.echo(table([stats.cells(r) for r in rows], stats.HEADERS))
        sys.stdout.flush()
        if no_stream:
            return
        prev = cur


@container_group.command("stop")
@click.option("-t", "--time", "timeout", type=float, default=None, help="Seconds before SIGKILL (default 10).")
@click.argument("containers", nargs=-1, required=True)
@pass_app
def stop_cmd(app: App, timeout, containers) -> None:
    """Stop containers (stop signal, then SIGKILL after the timeout); no restart after."""
    mgr = _manager(app)
    for c in containers:
        mgr.stop(c, timeout)
        click.echo(c)


@container_group.command("start")
@click.argument("containers", nargs=-1, required=True)
@pass_app
def start_cmd(app: App, containers) -> None:
    """Start stopped containers."""
    mgr = _manager(app)
    for c in containers:
        mgr.start(c)
        click.echo(c)


@container_group.command("restart")
@click.option("-t", "--time", "timeout", type=float, default=None)
@click.argument("containers", nargs=-1, required=True)
@pass_app
def restart_cmd(app: App, timeout, containers) -> None:
    """Stop then start containers."""
    mgr = _manager(app)
    for c in containers:
        mgr.restart(c, timeout)
        click.echo(c)


@container_group.command("rm")
@click.option("-f", "--force", is_flag=True, help="Kill a running container first.")
@click.option("-v", "--volumes", is_flag=True, help="Remove its anonymous volumes too.")
@click.argument("containers", nargs=-1, required=True)
@pass_app
def rm_cmd(app: App, force: bool, volumes: bool, containers) -> None:
    """Remove containers: supervisor, network endpoint, rootfs snapshot, record."""
    mgr = _manager(app)
    for c in containers:
        mgr.rm(c, force=force, remove_volumes=volumes)
        click.echo(c)


@container_group.command("exec", context_settings={"allow_interspersed_args": False})
@click.option("-i", "--interactive", is_flag=True, help="Keep stdin attached (it always is without -t).")
@click.option("-t", "--tty", is_flag=True, help="Give the command a pseudo-terminal (with -i: this terminal's input).")
@click.option("-e", "--env", "env", multiple=True, metavar="K=V")
@click.option("-u", "--user", metavar="USER[:GROUP]")
@click.option("-w", "--workdir", metavar="DIR")
@click.argument("container")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_app
def exec_cmd(app: App, interactive, tty, env, user, workdir, container, command) -> None:
    """Run a command in a running container (sharing this stdin/stdout/stderr, or a pty with -t);
    exits with its code."""
    from ..runspec.request import env_from_cli

    mgr = _manager(app)
    kw = {"env": env_from_cli(env), "user": user, "workdir": workdir}
    if tty:
        code = mgr.exec_tty(container, list(command), interactive=interactive, **kw)
    else:
        code = mgr.exec_attached(container, list(command), **kw)
    sys.exit(code)


@container_group.command("autoremove", hidden=True)
@click.argument("container")
@pass_app
def autoremove_cmd(app: App, container: str) -> None:
    """Remove an exited `run -d --rm` container (the supervisor's exit command)."""
    _manager(app).autoremove(container)


@container_group.command("balance", hidden=True)
@click.argument("group")
@pass_app
def balance_cmd(app: App, group: str) -> None:
    """Point a replicated service's published ports at its ready replicas (the supervisors' hook)."""
    _manager(app).rebalance(group)


@container_group.command("inspect")
@json_option
@click.argument("containers", nargs=-1, required=True)
@pass_app
def inspect_cmd(app: App, containers) -> None:
    """Show everything known about containers (JSON)."""
    mgr = _manager(app)
    app.json = True
    emit(app, [mgr.inspect(c) for c in containers])


def register(cli: click.Group) -> None:
    cli.add_command(container_group)
