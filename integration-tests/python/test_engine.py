"""berthd through docker-py 7.2: the flows the docker CLI tests drive
(integration-tests/tests/engine_containers.rs), the way Python programs
drive them.

Run by integration-tests/tests/engine_docker_py.rs, which starts a berthd
on temporary state with `busybox:latest` imported and sets DOCKER_HOST to
its socket. Each test removes the containers it made.
"""

import json
import time

import docker
import pytest
from docker.utils.socket import next_frame_header, read_exactly

IMAGE = "busybox:latest"


@pytest.fixture(scope="session")
def client():
    c = docker.from_env()
    yield c
    c.close()


@pytest.fixture
def made(client):
    """Containers a test made, removed (forced) when it ends."""
    containers = []
    yield containers
    for c in containers:
        try:
            c.remove(force=True)
        except docker.errors.NotFound:
            pass


def run_detached(client, made, command, **kwargs):
    c = client.containers.run(IMAGE, command, detach=True, **kwargs)
    made.append(c)
    return c


def wait_for(condition, what, timeout=20):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_ping_and_version(client):
    assert client.ping() is True
    version = client.version()
    assert version["ApiVersion"]
    assert version["Os"] == "linux"
    # docker-py negotiated a version berthd serves.
    assert client.api.api_version


def test_run_attached_output_and_exit_codes(client, made):
    out = client.containers.run(IMAGE, ["echo", "hello"], remove=True)
    assert out == b"hello\n"
    out = client.containers.run(
        IMAGE, ["sh", "-c", "echo out; echo err >&2"], stdout=True, stderr=True,
        remove=True,
    )
    assert b"out\n" in out and b"err\n" in out
    with pytest.raises(docker.errors.ContainerError) as failed:
        client.containers.run(
            IMAGE, ["sh", "-c", "echo oops >&2; exit 3"], name="failing"
        )
    made.append(client.containers.get("failing"))
    assert failed.value.exit_status == 3
    assert b"oops" in failed.value.stderr
    c = client.containers.get("failing")
    assert c.status == "exited"
    assert c.attrs["State"]["ExitCode"] == 3
    assert c.name == "failing"


def test_run_detached_wait_and_logs(client, made):
    c = run_detached(
        client, made, ["sh", "-c", "for i in 1 2 3 4 5; do echo line$i; done; echo e >&2"]
    )
    assert c.wait(timeout=30) == {"StatusCode": 0, "Error": None}
    assert c.logs() == b"line1\nline2\nline3\nline4\nline5\ne\n"
    assert c.logs(stderr=False) == b"line1\nline2\nline3\nline4\nline5\n"
    assert c.logs(stdout=False) == b"e\n"
    assert c.logs(tail=2, stderr=False) == b"line4\nline5\n"
    stamped = c.logs(timestamps=True, stderr=False).decode().splitlines()
    assert len(stamped) == 5
    for line in stamped:
        stamp, text = line.split(" ", 1)
        assert stamp[:4].isdigit() and stamp.endswith("Z"), line
        assert text.startswith("line")


def test_logs_stream_follows_a_running_container(client, made):
    c = run_detached(client, made, ["sh", "-c", "echo first; sleep 1; echo second"])
    chunks = b"".join(c.logs(stream=True, follow=True))
    assert chunks == b"first\nsecond\n"


def test_create_start_stop_kill_restart_remove(client, made):
    c = client.containers.create(IMAGE, ["sleep", "300"], name="lifecycle")
    made.append(c)
    c.reload()
    assert c.status == "created"
    c.start()
    c.reload()
    assert c.status == "running"
    assert c.attrs["State"]["Pid"] > 0
    c.stop(timeout=1)
    c.reload()
    assert c.status == "exited"
    # sleep is pid 1 without a handler: SIGTERM is ignored, SIGKILL follows.
    assert c.attrs["State"]["ExitCode"] == 137
    c.restart(timeout=1)
    c.reload()
    assert c.status == "running"
    c.kill()
    # A SIGKILL is answered once the container is down, as dockerd does.
    c.reload()
    assert c.status == "exited" and c.attrs["State"]["ExitCode"] == 137
    c.start()
    with pytest.raises(docker.errors.APIError) as running:
        c.remove()
    assert running.value.status_code == 409
    c.remove(force=True)
    with pytest.raises(docker.errors.NotFound):
        client.containers.get("lifecycle")


def test_attach_socket_stdin_and_stdout(client, made):
    c = client.containers.create(
        IMAGE, ["sh", "-c", "read line; echo got $line"], stdin_open=True
    )
    made.append(c)
    sock = client.api.attach_socket(
        c.id, params={"stdin": 1, "stdout": 1, "stream": 1}
    )
    c.start()
    raw = sock._sock
    raw.settimeout(20)
    raw.sendall(b"hello\n")
    stream, size = next_frame_header(raw)
    assert stream == 1
    assert read_exactly(raw, size) == b"got hello\n"
    sock.close()
    assert c.wait(timeout=30)["StatusCode"] == 0


def test_exec_run_exit_codes_and_inspect(client, made):
    c = run_detached(client, made, ["sleep", "300"])
    assert c.exec_run(["true"]).exit_code == 0
    assert c.exec_run(["sh", "-c", "exit 4"]).exit_code == 4
    assert c.exec_run(["sh", "-c", "test $FOO/$(pwd) = bar//tmp"],
                      environment={"FOO": "bar"}, workdir="/tmp").exit_code == 0
    exec_id = client.api.exec_create(c.id, ["true"])["Id"]
    client.api.exec_start(exec_id)
    info = client.api.exec_inspect(exec_id)
    assert info["ExitCode"] == 0 and info["Running"] is False


# A short exec's output comes whole: berthd starts the process only once
# the client holds the upgraded connection (docker-py reads the 101's
# headers through a buffer, which would swallow output sent with them).
def test_exec_run_output(client, made):
    c = run_detached(client, made, ["sleep", "300"])
    result = c.exec_run(["echo", "hi"])
    assert result == (0, b"hi\n")
    result = c.exec_run(["sh", "-c", "echo out; echo err >&2; exit 4"], demux=True)
    assert result.exit_code == 4
    assert result.output == (b"out\n", b"err\n")
    result = c.exec_run(["sh", "-c", "echo $FOO $(pwd)"], environment={"FOO": "bar"},
                        workdir="/tmp")
    assert result.output == b"bar /tmp\n"


def test_exec_run_stream(client, made):
    c = run_detached(client, made, ["sleep", "300"])
    result = c.exec_run(["sh", "-c", "echo a; sleep 0.2; echo b"], stream=True)
    assert b"".join(result.output) == b"a\nb\n"


def test_exec_start_frames_unless_the_start_says_tty(client, made):
    c = run_detached(client, made, ["sleep", "300"])
    # Created with a tty, started without: the output is framed (dockerd
    # goes by the start request), as docker-py's exec_start(tty=False) reads.
    # (It writes late: output written before the stream is read may be lost.)
    exec_id = client.api.exec_create(c.id, ["sh", "-c", "sleep 0.3; printf yay"],
                                     tty=True)["Id"]
    sock = client.api.exec_start(exec_id, socket=True)
    stream, size = next_frame_header(sock)
    assert (stream, size) == (1, 3)
    assert read_exactly(sock, size) == b"yay"
    sock.close()
    exec_id = client.api.exec_create(c.id, ["sh", "-c", "sleep 0.3; printf raw"],
                                     tty=True)["Id"]
    assert client.api.exec_start(exec_id, tty=True) == b"raw"


def test_inspect_fields_docker_py_reads(client, made):
    c = run_detached(
        client, made, ["sleep", "300"], name="inspected", labels={"app": "test"},
        environment={"A": "1"}, working_dir="/tmp", hostname="box",
        mem_limit="64m",
    )
    # run returns the container as it was created: reload for its state.
    c.reload()
    a = c.attrs
    assert a["Id"] == c.id and len(c.id) == 64
    assert a["Name"] == "/inspected"
    assert a["State"]["Running"] is True and a["State"]["Status"] == "running"
    assert a["State"]["StartedAt"].endswith("Z")
    assert a["Config"]["Image"] == IMAGE
    assert a["Config"]["Cmd"] == ["sleep", "300"]
    assert a["Config"]["Labels"] == {"app": "test"}
    assert "A=1" in a["Config"]["Env"]
    assert a["Config"]["WorkingDir"] == "/tmp"
    assert a["Config"]["Hostname"] == "box"
    assert a["HostConfig"]["Memory"] == 64 * 1024 * 1024
    assert "NetworkSettings" in a and "Networks" in a["NetworkSettings"]
    assert a["Image"].startswith("sha256:")
    assert c.labels == {"app": "test"}
    assert c.short_id == c.id[:12]


def test_list_with_filters(client, made):
    up = run_detached(client, made, ["sleep", "300"], name="up", labels={"tier": "a"})
    done = run_detached(client, made, ["true"], name="done", labels={"tier": "b"})
    done.wait(timeout=30)
    running = {c.name for c in client.containers.list()}
    assert "up" in running and "done" not in running
    every = {c.name for c in client.containers.list(all=True)}
    assert {"up", "done"} <= every
    assert [c.name for c in client.containers.list(all=True, filters={"status": "exited"})] == ["done"]
    assert [c.name for c in client.containers.list(all=True, filters={"label": "tier=a"})] == ["up"]
    assert [c.name for c in client.containers.list(all=True, filters={"name": "done"})] == ["done"]
    assert [c.id for c in client.containers.list(all=True, filters={"id": up.id[:12]})] == [up.id]
    assert [c.name for c in client.containers.list(all=True, filters={"exited": 0})] == ["done"]
    assert len(client.containers.list(all=True, limit=1)) == 1


def test_rename_pause_unpause_top_stats(client, made):
    c = run_detached(client, made, ["sleep", "300"], name="before")
    c.rename("after")
    c.reload()
    assert c.name == "after"
    with pytest.raises(docker.errors.NotFound):
        client.containers.get("before")
    c.pause()
    c.reload()
    assert c.status == "paused" and c.attrs["State"]["Paused"] is True
    c.unpause()
    c.reload()
    assert c.status == "running"
    top = c.top()
    assert "PID" in top["Titles"]
    commands = [p[top["Titles"].index("CMD")] for p in top["Processes"]]
    assert any("sleep 300" in cmd for cmd in commands), top
    stats = c.stats(stream=False)
    assert stats["memory_stats"]["usage"] > 0
    assert "cpu_usage" in stats["cpu_stats"]
    assert stats["pids_stats"]["current"] >= 1
    stream = c.stats(stream=True, decode=True)
    first = next(stream)
    assert "read" in first and "memory_stats" in first
    stream.close()


def test_errors(client, made):
    with pytest.raises(docker.errors.NotFound) as missing:
        client.containers.get("no-such-container")
    assert missing.value.status_code == 404
    assert "no-such-container" in missing.value.explanation
    with pytest.raises(docker.errors.ImageNotFound):
        client.api.create_container("no-such-image:1.0", ["true"])
    with pytest.raises(docker.errors.NotFound):
        client.api.start("no-such-container")
    c = client.containers.create(IMAGE, ["true"], name="taken")
    made.append(c)
    with pytest.raises(docker.errors.APIError) as taken:
        client.containers.create(IMAGE, ["true"], name="taken")
    assert taken.value.status_code == 409
    assert "taken" in taken.value.explanation
    with pytest.raises(docker.errors.APIError) as bad_name:
        client.containers.create(IMAGE, ["true"], name="bad/name")
    assert bad_name.value.status_code == 400
    with pytest.raises(docker.errors.NotFound):
        client.api.exec_inspect("no-such-exec")
    with pytest.raises(docker.errors.APIError) as not_running:
        c.exec_run(["true"])
    assert not_running.value.status_code == 409
    # Nothing was left by the failed creates.
    names = {x.name for x in client.containers.list(all=True)}
    assert names == {"taken"}


def test_raw_api_json_errors(client):
    resp = client.api._post_json(
        client.api._url("/containers/create"), data={"Image": IMAGE, "HostConfig": {"Memory": "lots"}}
    )
    assert resp.status_code == 400
    assert json.loads(resp.text)["message"]


def test_images_list_and_get(client):
    image = client.images.get(IMAGE)
    assert IMAGE in image.tags
    assert image.id.startswith("sha256:")
    assert image.attrs["Config"]["Cmd"] == ["sh"]
    assert image.id in {i.id for i in client.images.list()}
    assert [i.id for i in client.images.list(name="busybox")] == [image.id]


def test_image_not_found(client):
    with pytest.raises(docker.errors.ImageNotFound):
        client.containers.create("no-such-image:1.0", ["true"])
    # run pulls what is missing: the name's registry does not resolve, so
    # the pull fails (dockerd answers 500 for it, as berthd).
    with pytest.raises(docker.errors.APIError):
        client.containers.run("no-such-image.invalid/x:1.0", ["true"])


def test_loopback_only_network(client):
    out = client.containers.run(IMAGE, ["cat", "/proc/net/dev"], remove=True)
    interfaces = [line.split(":")[0].strip() for line in out.decode().splitlines()[2:]]
    assert interfaces == ["lo"]



def test_exec_output_many_times(client, made):
    c = run_detached(client, made, ["sleep", "300"])
    for _ in range(30):
        assert c.exec_run(["echo", "hi"]) == (0, b"hi\n")


def test_exec_of_a_missing_program(client, made):
    c = run_detached(client, made, ["sleep", "300"])
    code, output = c.exec_run(["no-such-program"])
    assert code == 127
    assert b"executable file not found" in output
