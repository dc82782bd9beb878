#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target (real packets, messages,
tokens and files, as clients, other nodes and operators send them) into
fuzz/seeds/<target>/. `fuzz/run.sh` starts each target from its committed
corpus plus these seeds."""

import base64
import hashlib
import hmac
import json
import os
import struct
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")
# switchboard_server::fuzzing::SECRET
SECRET = b"switchboard-fuzzing-secret-32-bytes!"
RS = b"\x1e"


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=")


def token(claims, alg="HS256", key=SECRET):
    header = b64url(json.dumps({"alg": alg, "typ": "JWT"}, separators=(",", ":")).encode())
    payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
    msg = header + b"." + payload
    sig = hmac.new(key, msg, hashlib.sha256).digest()
    return msg + b"." + b64url(sig)


def mp(v):
    """MessagePack as notepack.io writes it (the subset the adapters use)."""
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 128:
            return bytes([v])
        if -32 <= v < 0:
            return struct.pack("b", v)
        if 0 <= v < 2**32:
            return b"\xce" + struct.pack(">I", v)
        return b"\xd3" + struct.pack(">q", v)
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, str):
        b = v.encode()
        return (bytes([0xA0 | len(b)]) if len(b) < 32 else b"\xd9" + bytes([len(b)])) + b
    if isinstance(v, bytes):
        return b"\xc4" + bytes([len(v)]) + v
    if isinstance(v, list):
        return bytes([0x90 | len(v)]) + b"".join(mp(i) for i in v)
    if isinstance(v, dict):
        return bytes([0x80 | len(v)]) + b"".join(mp(k) + mp(x) for k, x in v.items())
    raise TypeError(v)


def j(v):
    return json.dumps(v, separators=(",", ":")).encode()


VALID = token({"sub": "ada", "name": "Ada", "exp": 4102444800})
SID = "AbCdEfGhIjKlMnOpQrSt"
PID = "pPpPpPpPpPpPpPpPpPpP"
OPTS = {"rooms": ["room1"], "except": [], "flags": {"volatile": True}}
PACKET = {"type": 2, "data": ["chat", "hi", 1, 2.5, b"\x01\x02"], "nsp": "/"}

SEEDS = {
    "engine_packet": [
        b'0{"sid":"abc","upgrades":["websocket"],"pingInterval":25000}',
        b"1", b"2", b"2probe", b"3probe", b"4hello", b"5", b"6",
        "4hé".encode(), b'42["chat","hi"]', b'40/admin,{"token":"x"}',
    ],
    "polling_payload": [
        b"4hello" + RS + b"bAQIDBA==" + RS + b"2",
        b"40", b'42["a",1]' + RS + b'42["b"]', b"1", b"6", b"3probe",
        b'451-["up",{"_placeholder":true,"num":0}]' + RS + b"bAQID",
        b"b" + RS + b"4",
    ],
    "socketio_packet": [
        b"0", b'0/admin,{"token":"123"}', b"1/admin,",
        b'2/admin,12["hello",1]', b'312["ok"]',
        b'52-["up",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]' + RS + b"\x01\x02" + RS + b"\x03",
        b'61-/x,7[{"_placeholder":true,"num":0}]' + RS + b"bin",
        b'4{"message":"no"}', b'2["chat",{"b":1,"a":[true,null,1.5,-3]}]',
        b'2[1,"numeric event name"]', b'0{"sid":"x","pid":"y","offset":"1-0"}',
    ],
    "value_json": [
        b'{"b":1,"a":2}', b'[1,2.5,-3e10,"x",null,true,{"_placeholder":true,"num":0}]',
        '"stré\\u00e9\\ud83d\\ude00"'.encode(), b"18446744073709551615",
        b"-9223372036854775808", b"1e308", b'{"nested":[[[{}]]],"k":{"_placeholder":true,"num":3}}',
        b'[{"num":1,"_placeholder":true},{"_placeholder":true,"num":9}]', b"0.1",
    ],
    "ws_commands": [
        b'{"type":"ping","id":1}',
        b"\n".join([
            b'{"type":"auth","payload":{"token":"' + VALID + b'"},"id":1}',
            b'{"type":"subscribe","payload":{"channel":"chat:lobby"},"id":2}',
            b'{"type":"message","payload":{"channel":"chat:lobby","data":{"text":"hi"}},"id":"m1"}',
            b'{"type":"history","payload":{"channel":"chat:lobby","limit":5},"id":3}',
            b'{"type":"presence","payload":{"channel":"chat:lobby"},"id":4}',
            b'{"type":"unsubscribe","payload":{"channel":"chat:lobby"},"id":5}',
        ]),
        b"\n".join([
            b'{"type":"auth","payload":{"token":"' + VALID + b'"}}',
            b'{"type":"subscribe","payload":{"channel":"chat:x","since":{"offset":3,"epoch":"e1"}},"id":1,"timestamp":1}',
            b'{"type":"subscribe","payload":{"channel":"user:ada"},"id":2}',
            b'{"type":"message","payload":{"channel":"user:ada","data":[1,2]},"id":3}',
        ]),
        b'{"type":"subscribe","payload":{"channel":"open:x"},"id":1}\n{"type":"message","payload":{"channel":"open:x","data":1}}',
        b'{"type":"teleport"}', b"{nope", b'{"type":"ping","extra":1}',
    ],
    "sse_last_event_id": [
        b"chat:lobby~ab12~12,user:a=b:c~ff00~3", b"chat:lobby~ab12~12,garbage,x~y~z",
        b"open:x~e~0", b"", b"chat:a~~18446744073709551615",
    ],
    "jwt": [
        b"\x00" + VALID,
        b"\x00" + token({"sub": "ada", "channels": ["chat:lobby"], "iss": "x", "aud": "y"}),
        b"\x00" + token({"sub": "ada"}, alg="HS512"),
        b"\x00" + b64url(b'{"alg":"none"}') + b"." + b64url(b'{"sub":"a"}') + b".",
        b"\x00a.b.c", b"\x00",
        b"\x01" + j({"sub": "ada"}),
        b"\x01" + j({"sub": "ada", "exp": 4102444800, "name": "Ada", "channels": ["chat:lobby", "user:ada"]}),
        b"\x01" + j({"sub": "", "exp": 1}), b"\x01" + j({"sub": "x", "nbf": 4102444800}),
        b"\x01" + j({"sub": "x", "name": 3}), b"\x01[1]",
    ],
    "config_file": [
        b"",
        b'[server]\nport = 443\ndata_dir = "/var/lib/switchboard"\n\n[auth]\nsecret = "0123456789abcdef0123456789abcdef"\nissuer = "https://auth.example.com"\n\n[api]\nkey = "a-long-random-key-for-backends"\n\n[log]\nformat = "json"\n\n[limits]\nmax_connections_per_ip = 50\nmessages_per_second = 20\n\n[channels.chat]\nsubscribe = "authenticated"\npublish = "subscribers"\nhistory_size = 500\nhistory_storage = "persisted"\npresence = true\njoin_leave = true\n',
        b'[channels.open]\nsubscribe = "anyone"\npublish = "authenticated"\nhistory_size = 10\nhistory_ttl_secs = 60\nmax_message_size = 1024\n',
        b'[server]\nworkers = 1\nshutdown_timeout_secs = 0\n[web]\nenabled = false\n[log]\nlevel = "info,switchboard=debug"\n',
        b'[auth]\nalgorithm = "ES256"\npublic_key_file = "/nonexistent.pem"\naudience = "a"\nname_claim = "n"\nchannels_claim = "c"\n',
    ],
    "redis_message": [
        mp(["uid1", PACKET, OPTS]),
        mp(["uid1", {"type": 2, "data": ["ev"], "nsp": "/chat"}, {"rooms": [], "except": ["x"]}]),
        j({"uid": "u2", "requestId": "r1", "type": 0, "rooms": ["a", 3]}),
        j({"requestId": "r1", "sockets": [{"id": SID, "handshake": {"headers": {}, "query": {}, "address": "1.2.3.4"}, "rooms": [SID, "a"], "data": {"k": 1}}]}),
        j({"uid": "u", "nsp": "/", "type": 3, "data": {"packet": {"type": 2, "data": ["ev", {"a": 1}], "nsp": "/"}, "opts": OPTS}}),
        mp({"uid": "u", "nsp": "/", "type": 3, "data": {"packet": PACKET, "opts": OPTS, "requestId": "r2"}}),
        base64.b64encode(mp({"packet": PACKET, "opts": OPTS})),
        base64.b64encode(mp({"sid": SID, "pid": PID, "rooms": ["a"], "data": {"user": "ada"}})),
        j({"uid": "u", "nsp": "/", "type": 4, "data": {"opts": OPTS, "rooms": ["b"]}}),
    ],
}


def main():
    for target, seeds in SEEDS.items():
        d = os.path.join(ROOT, target)
        os.makedirs(d, exist_ok=True)
        for data in seeds:
            name = hashlib.sha1(data).hexdigest()
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
    print(f"seeds written under {ROOT}", file=sys.stderr)


if __name__ == "__main__":
    main()
