"""Network helpers for the TLS and proxy tests (test-only).

  net_helper.py tls-front CERT KEY UPSTREAM_PORT   TLS on 127.0.0.1:0, bytes relayed to 127.0.0.1:UPSTREAM_PORT
  net_helper.py proxy                              an HTTP forward proxy (CONNECT and absolute-form) on 127.0.0.1:0

Each prints "ready PORT" first; the proxy then prints one line per request it carries
("CONNECT host:port" or "FORWARD host:port"). Stops on SIGTERM.
"""
import asyncio
import ssl
import sys


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def relay(client_r, client_w, host, port, first=b""):
    up_r, up_w = await asyncio.open_connection(host, port)
    if first:
        up_w.write(first)
        await up_w.drain()
    await asyncio.gather(pipe(client_r, up_w), pipe(up_r, client_w))


async def tls_front(cert, key, upstream_port):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)

    async def handle(r, w):
        try:
            await relay(r, w, "127.0.0.1", upstream_port)
        except Exception:
            w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    print("ready", server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


async def proxy():
    async def handle(r, w):
        try:
            head = await r.readuntil(b"\r\n\r\n")
            line = head.split(b"\r\n", 1)[0].decode()
            method, target, version = line.split(" ")
            if method == "CONNECT":
                host, port = target.rsplit(":", 1)
                print("CONNECT", target, flush=True)
                w.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await w.drain()
                await relay(r, w, host, int(port))
            else:
                rest = target.split("://", 1)[1]
                hostport, _, path = rest.partition("/")
                host, _, port = hostport.partition(":")
                print("FORWARD", hostport, flush=True)
                first = f"{method} /{path} {version}\r\n".encode() + head.split(b"\r\n", 1)[1]
                await relay(r, w, host, int(port or 80), first)
        except Exception:
            w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print("ready", server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    if sys.argv[1] == "tls-front":
        asyncio.run(tls_front(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    else:
        asyncio.run(proxy())
