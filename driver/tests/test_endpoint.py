import socket

import pytest

from rds_csi.endpoint import EndpointError, parse_endpoint, remove_stale_socket


@pytest.mark.parametrize(
    ("text", "scheme", "address", "target"),
    [
        ("unix:///csi/csi.sock", "unix", "/csi/csi.sock", "unix:///csi/csi.sock"),
        ("unix:/csi/csi.sock", "unix", "/csi/csi.sock", "unix:///csi/csi.sock"),
        ("unix:///csi//x/../csi.sock", "unix", "/csi/csi.sock", "unix:///csi/csi.sock"),
        ("tcp://127.0.0.1:10000", "tcp", "127.0.0.1:10000", "127.0.0.1:10000"),
        ("tcp://localhost:0", "tcp", "localhost:0", "localhost:0"),
    ],
)
def test_parse_valid(text: str, scheme: str, address: str, target: str) -> None:
    ep = parse_endpoint(text)
    assert (ep.scheme, ep.address, ep.grpc_target) == (scheme, address, target)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("/csi/csi.sock", "must start with unix:// or tcp://"),
        ("unix://relative/csi.sock", "absolute path"),
        ("tcp://127.0.0.1", "tcp://HOST:PORT"),
        ("tcp://:99", "tcp://HOST:PORT"),
        ("tcp://host:99999", "tcp://HOST:PORT"),
        ("http://x:1", "must start with"),
        ("unix:///" + "a" * 120, "longer than 107"),
    ],
)
def test_parse_invalid(text: str, fragment: str) -> None:
    with pytest.raises(EndpointError, match=fragment):
        parse_endpoint(text)


def test_remove_stale_socket_only_removes_sockets(tmp_path) -> None:
    sock_path = tmp_path / "csi.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock_path))
    s.close()
    remove_stale_socket(sock_path)
    assert not sock_path.exists()
    remove_stale_socket(sock_path)  # absent is fine

    regular = tmp_path / "data"
    regular.write_text("precious")
    with pytest.raises(EndpointError, match="not a socket"):
        remove_stale_socket(regular)
    assert regular.read_text() == "precious"
