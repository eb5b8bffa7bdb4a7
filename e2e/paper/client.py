"""The paper's chat client, minus its Tkinter window, against our server.

As in the paper: stubs generated from the paper's chat.proto with
grpcio-tools, one bidirectional ChatStream, a queue feeding what this user
types into the request stream, and a thread printing what the others say
as "[HH:MM:SS] name: text". Used by e2e/paper.test.mjs:

    python client.py --server 127.0.0.1:50051 --name ada \
        --say "hello" --expect "hi ada"

It says --say once the stream is open, prints every message it receives,
and exits 0 as soon as one from another user reads --expect (1 if none
comes within --timeout seconds).
"""

import argparse
import datetime
import os
import queue
import atexit
import shutil
import sys
import tempfile
import threading

import grpc
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))


def generate_stubs():
    """chat_pb2 and chat_pb2_grpc from the paper's proto, in a temp dir."""
    out = tempfile.mkdtemp(prefix="paper-stubs-")
    # Imported modules are loaded by then; the folder goes with the process.
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    status = protoc.main([
        "protoc", f"-I{HERE}", f"-I{include}",
        f"--python_out={out}", f"--grpc_python_out={out}",
        os.path.join(HERE, "chat.proto"),
    ])
    if status != 0:
        sys.exit(f"protoc failed ({status})")
    sys.path.insert(0, out)
    import chat_pb2  # noqa: E402 (generated just now)
    import chat_pb2_grpc  # noqa: E402
    return chat_pb2, chat_pb2_grpc


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--say", required=True)
    parser.add_argument("--expect", required=True)
    parser.add_argument("--timeout", type=float, default=20)
    args = parser.parse_args()

    chat_pb2, chat_pb2_grpc = generate_stubs()
    channel = grpc.insecure_channel(args.server)
    stub = chat_pb2_grpc.ChatServiceStub(channel)

    # The paper's queue: whatever is put here goes out on the stream.
    outgoing = queue.Queue()

    def requests():
        while True:
            message = outgoing.get()
            if message is None:
                return
            yield message

    responses = stub.ChatStream(requests())
    heard = threading.Event()

    def listen():
        try:
            for message in responses:
                when = datetime.datetime.fromtimestamp(message.timestamp / 1000)
                print(f"[{when:%H:%M:%S}] {message.username}: {message.message}", flush=True)
                if message.username != args.name and message.message == args.expect:
                    heard.set()
                    return
        except grpc.RpcError as error:
            print(f"stream ended: {error.code()} {error.details()}", flush=True)

    threading.Thread(target=listen, daemon=True).start()
    outgoing.put(chat_pb2.ChatMessage(username=args.name, message=args.say))
    print("sent", flush=True)
    ok = heard.wait(args.timeout)
    outgoing.put(None)
    responses.cancel()
    channel.close()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
