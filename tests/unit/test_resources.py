"""Descriptors named by kind and pattern (asanlab/soak/resources.py), from /proc text captured on Linux
(a connected UDP client, a bound UDP socket and a listening TCP socket of one process)."""

from asanlab.soak import resources

UDP = """   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
 4015: 0100007F:CACE 0100007F:0009 01 00000000:00000000 00:00000000 00000000     0        0 26305 2 00000000134ca9e2 0
10039: 0100007F:A256 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 26306 2 0000000029d77027 0
"""
TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   2: 0100007F:C867 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 26307 1 000000004d90c863 100 0 0 10 0
"""


def test_sockets_are_named_by_what_stays_the_same_per_request():
    sockets = resources.parse_net({"udp": UDP, "tcp": TCP})
    d = resources.summarise(["socket:[26305]", "socket:[26306]", "socket:[26307]", "/tmp/req-17.log",
                             "/tmp/req-18.log", "pipe:[5]", "anon_inode:[eventfd]"], sockets)
    assert d.total == 7
    # A client's UDP socket by its peer (its local port is random), a bound one by its port.
    assert d.sites["udp to 127.0.0.1:9"] == 1 and d.sites["udp :41558"] == 1
    assert d.sites["tcp listening on :51303"] == 1
    assert d.sites["/tmp/req-*.log"] == 2
    assert d.kinds == {"udp socket": 2, "file": 2, "tcp socket": 1, "pipe": 1, "eventfd": 1}
